"""Scene layout: interleaved 3D RoPE positions and validity, by hand."""
import numpy as np
import pytest

from lct_jax.layout import SceneGeometry, build_layout

# Grid: 4 latent frames, 4x6 latent, patch 2 -> token grid (F', H', W') = (4, 2, 3)
GEOM = SceneGeometry(max_shots=3, max_text_len=4, frames=4, height=4, width=6,
                     channels=1, patch_t=1, patch=2)
T = 4 * 2 * 3                                     # tokens per shot slot
# Scene: global text of 3 tokens; shot 1: 2 text tokens, 4 frames;
# shot 2: 4 text tokens, an image (1 frame); shot 3: padding.
TEXT_LEN = np.array([[3, 2, 4, 0]], np.int32)
NUM_FRAMES = np.array([[4, 1, 0]], np.int32)


def video_index(slot, f, y, x, geom=GEOM):
  _, hp, wp = geom.grid
  return slot * geom.tokens_per_slot + (f * hp + y) * wp + x


def text_index(group, i, geom=GEOM):
  return geom.video_len + group * geom.max_text_len + i


def rule_positions(text_len, num_frames, geom):
  """The design's rule, as a plain loop over groups (dict index -> pos)."""
  fp_max, hp, wp = geom.grid
  pos, o = {}, 0
  shot_frames = [1] + [int(n) for n in num_frames]   # global: 1-frame box
  for g in range(geom.num_groups):
    if g > 0 and num_frames[g - 1] == 0:
      break
    for i in range(text_len[g]):
      pos[text_index(g, i, geom)] = (o + i,) * 3
    s = o + text_len[g]
    if g > 0:
      for f in range(shot_frames[g]):
        for y in range(hp):
          for x in range(wp):
            pos[video_index(g - 1, f, y, x, geom)] = (s + f, s + y, s + x)
    o = s + max(shot_frames[g], hp, wp)
  return pos


def test_positions_hand_computed():
  lay = build_layout(GEOM, TEXT_LEN, NUM_FRAMES)
  pos = np.asarray(lay.pos_BxSx3[0])
  # Global text 0,1,2; its dummy box (1 frame, max(1,2,3)=3) -> next o = 6.
  assert pos[text_index(0, 2)].tolist() == [2, 2, 2]
  # Shot 1: text 6,7; video starts at s = 8; box max(4,2,3) = 4 -> o = 12.
  assert pos[text_index(1, 0)].tolist() == [6, 6, 6]
  assert pos[text_index(1, 1)].tolist() == [7, 7, 7]
  assert pos[video_index(0, 0, 0, 0)].tolist() == [8, 8, 8]
  assert pos[video_index(0, 3, 1, 2)].tolist() == [11, 9, 10]
  # Shot 2 (image): text 12..15; video at s = 16, one frame.
  assert pos[text_index(2, 3)].tolist() == [15, 15, 15]
  assert pos[video_index(1, 0, 1, 1)].tolist() == [16, 17, 17]


def test_positions_match_rule_everywhere():
  rng = np.random.default_rng(0)
  for _ in range(5):
    n_shots = rng.integers(1, 4)
    nf = np.where(np.arange(3) < n_shots, rng.integers(1, 5, 3), 0)
    tl = np.concatenate([rng.integers(0, 5, 1),
                         np.where(nf > 0, rng.integers(0, 5, 3), 0)])
    lay = build_layout(GEOM, tl[None], nf[None])
    pos, valid = np.asarray(lay.pos_BxSx3[0]), np.asarray(lay.valid_BxS[0])
    expect = rule_positions(tl, nf, GEOM)
    assert set(np.flatnonzero(valid)) == set(expect), (tl, nf)
    for idx, p in expect.items():
      assert tuple(pos[idx]) == p, (idx, tl, nf)


def test_validity_and_groups():
  lay = build_layout(GEOM, TEXT_LEN, NUM_FRAMES)
  valid = np.asarray(lay.valid_BxS[0])
  assert valid[text_index(0, 2)] and not valid[text_index(0, 3)]  # padding
  assert valid[video_index(1, 0, 1, 2)] and not valid[video_index(1, 1, 0, 0)]
  assert not valid[video_index(2, 0, 0, 0)]                       # padded shot
  assert not valid[text_index(3, 0)]
  groups = lay.groups_S
  assert groups[video_index(0, 0, 0, 0)] == 1
  assert groups[video_index(2, 3, 1, 2)] == 3
  assert groups[text_index(0, 0)] == 0 and groups[text_index(2, 1)] == 2
  assert len(groups) == GEOM.seq_len == 3 * T + 4 * 4


def test_legacy_mode_text_unrotated_video_from_zero():
  lay = build_layout(GEOM, TEXT_LEN, NUM_FRAMES, text_rope=False)
  pos = np.asarray(lay.pos_BxSx3[0])
  assert np.all(pos[GEOM.video_len:] == 0)          # text: angle 0
  assert pos[video_index(0, 3, 1, 2)].tolist() == [3, 1, 2]
  assert pos[video_index(1, 0, 1, 1)].tolist() == [0, 1, 1]


def test_global_dummy_tokens_flag():
  geom = SceneGeometry(max_shots=3, max_text_len=4, frames=4, height=4,
                       width=6, channels=1, patch=2, global_dummy_tokens=True)
  lay = build_layout(geom, TEXT_LEN, NUM_FRAMES)
  pos, valid = np.asarray(lay.pos_BxSx3[0]), np.asarray(lay.valid_BxS[0])
  # Slot 0 is the dummy block of group 0: one valid frame at s = 3.
  assert lay.groups_S[0] == 0
  assert pos[video_index(0, 0, 1, 2, geom)].tolist() == [3, 4, 5]
  assert valid[video_index(0, 0, 1, 2, geom)]
  assert not valid[video_index(0, 1, 0, 0, geom)]
  # Shots are unchanged by the flag (same positions as positional-only).
  assert pos[video_index(1, 0, 0, 0, geom)].tolist() == [8, 8, 8]


@pytest.mark.parametrize("kwargs, field", [
    (dict(height=5), "scene.height=5"),
    (dict(frames=3, patch_t=2), "scene.frames=3"),
    (dict(max_shots=0), "scene.max_shots"),
])
def test_bad_geometry_named(kwargs, field):
  base = dict(max_shots=3, max_text_len=4, frames=4, height=4, width=6,
              channels=1, patch_t=1, patch=2)
  base.update(kwargs)
  with pytest.raises(ValueError, match=field.replace(".", r"\.")):
    SceneGeometry(**base)
