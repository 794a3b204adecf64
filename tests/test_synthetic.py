"""Synthetic scenes: determinism, captions, continuous takes, tokenizer, and
recovering the hidden factors from pixels."""
import collections
import functools
import importlib.util
import pathlib

import numpy as np
import pytest

from lct_jax.data import synthetic as syn
from lct_jax.data import vocab
from lct_jax.diffusion import augment

NUM_SCENES = 300


@functools.lru_cache(maxsize=None)
def scenes(max_shots=4, max_frames=4, size=32, count=NUM_SCENES):
  return tuple(syn.generate_scene(seed, max_shots=max_shots,
                                  max_frames=max_frames, size=size)
               for seed in range(count))


def demo_config():
  path = pathlib.Path(__file__).parents[1] / "configs" / "demo.py"
  spec = importlib.util.spec_from_file_location("demo_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def sprite_rgb(factors):
  """The sprite's exact pixel value: palette colour times the tint."""
  rgb = (np.asarray(syn.SPRITE_COLORS[factors["sprite_color"]])
         * np.asarray(syn.TINTS[factors["tint"]]))
  return np.round(rgb).astype(np.uint8)


def sprite_centroids(shot):
  """[F, 2] centroid (y, x) of the sprite-coloured pixels in each frame."""
  is_sprite = np.all(shot.frames == sprite_rgb(shot.factors), axis=-1)
  return np.asarray([np.argwhere(m).mean(0) for m in is_sprite])


def test_same_seed_same_scene_different_seeds_differ():
  a, b = syn.generate_scene(7, max_shots=9), syn.generate_scene(7, max_shots=9)
  assert a.global_prompt == b.global_prompt and a.scene_id == b.scene_id
  assert len(a.shots) == len(b.shots)
  for sa, sb in zip(a.shots, b.shots):
    np.testing.assert_array_equal(sa.frames, sb.frames)
    assert (sa.prompt, sa.has_cut, sa.factors) == (sb.prompt, sb.has_cut,
                                                    sb.factors)
  others = [syn.generate_scene(s, max_shots=9) for s in range(8, 12)]
  assert all(o.scene_id != a.scene_id for o in others)
  assert any(o.global_prompt != a.global_prompt for o in others)
  assert all(o.shots[0].frames.shape != a.shots[0].frames.shape
             or np.any(o.shots[0].frames != a.shots[0].frames)
             for o in others)


def test_shapes_dtypes_shot_counts_and_images():
  all_scenes = scenes(max_shots=9, count=200)
  counts = collections.Counter(len(s.shots) for s in all_scenes)
  assert set(counts) == set(range(1, 10))
  num_images = num_shots = 0
  for scene in all_scenes:
    for shot in scene.shots:
      num_frames = shot.frames.shape[0]
      assert shot.frames.dtype == np.uint8
      assert shot.frames.shape[1:] == (32, 32, 3) and 1 <= num_frames <= 4
      assert shot.centers.shape == (num_frames, 2)
      num_images += num_frames == 1
      num_shots += 1
  assert 0.1 < num_images / num_shots < 0.3     # about 1 in 4 of cut shots
  assert any(s.continuous for s in all_scenes)
  only_images = syn.generate_scene(3, max_frames=1)
  assert all(s.frames.shape[0] == 1 for s in only_images.shots)
  big = syn.generate_scene(3, size=64, max_frames=8)
  assert all(s.frames.shape[1:] == (64, 64, 3) for s in big.shots)


@pytest.mark.parametrize("size,max_frames", [(32, 4), (32, 9), (64, 8)])
def test_sprite_always_visible_and_off_the_border(size, max_frames):
  ring = np.ones((size, size), bool)
  m = syn.margin_for(size)
  ring[m:-m, m:-m] = False
  for scene in scenes(max_shots=4, max_frames=max_frames, size=size,
                      count=60):
    for shot in scene.shots:
      is_sprite = np.all(shot.frames == sprite_rgb(shot.factors), axis=-1)
      assert is_sprite.any(axis=(1, 2)).all()
      assert not is_sprite[:, ring].any()


def test_captions_state_some_factors_and_never_the_tint():
  tint_words = set(syn.TINTS)
  for scene in scenes():
    factors = scene.shots[0].factors
    global_words = set(vocab.tokenize(scene.global_prompt))
    assert not tint_words & global_words
    for stated in ("shape", "sprite_color", "size", "background_color",
                   "texture"):
      assert factors[stated] in global_words, (stated, scene.global_prompt)
    for shot in scene.shots:
      assert not tint_words & set(vocab.tokenize(shot.prompt))
      assert "Character 1" in shot.prompt
      assert shot.factors["framing"] in shot.prompt
      assert syn.ACTION_PHRASES[shot.factors["action"]] in shot.prompt
      assert shot.has_cut == shot.prompt.startswith("[SHOT CUT] ")
      assert {k: shot.factors[k] for k in syn.SCENE_FACTORS} == {
          k: factors[k] for k in syn.SCENE_FACTORS}
  assert "warm" not in vocab.ID_OF and "cool" not in vocab.ID_OF


def test_continuous_takes_carry_the_sprite_across_segments():
  continuous = [s for s in scenes(max_shots=9, count=200) if s.continuous]
  assert len(continuous) > 20
  step = syn.speed_for(32)
  for scene in continuous:
    assert len(scene.shots) >= 2
    assert len({s.factors["framing"] for s in scene.shots}) == 1
    for shot in scene.shots:
      assert not shot.has_cut and "[SHOT CUT]" not in shot.prompt
      assert shot.frames.shape[0] >= 2
    for prev, nxt in zip(scene.shots, scene.shots[1:]):
      # Measured from pixels, not from the generator's own track.
      jump = np.abs(sprite_centroids(nxt)[0] - sprite_centroids(prev)[-1])
      assert jump.max() <= step + 1e-6, (scene.scene_id, jump)
  cut = [s for s in scenes(max_shots=9, count=200) if not s.continuous]
  assert all(shot.has_cut for s in cut for shot in s.shots)


def test_tokenizer_round_trips_every_caption():
  config = demo_config()
  assert vocab.VOCAB_SIZE <= config.model.vocab_size
  max_len = config.scene.max_text_len
  captions = {s.global_prompt for s in scenes(max_shots=9, count=200)}
  captions |= {shot.prompt for s in scenes(max_shots=9, count=200)
               for shot in s.shots}
  for caption in captions:
    ids, length = vocab.encode(caption, max_len, truncate=False)
    assert ids.dtype == np.int32 and ids.shape == (max_len,)
    assert np.all(ids[:length] > vocab.UNK_ID) and np.all(ids[length:] == 0)
    assert np.all(ids < vocab.VOCAB_SIZE)
    # Only "Character" is capitalised in the captions; the marker stays.
    assert vocab.decode(ids, length) == caption.replace("Character",
                                                        "character")
  assert vocab.tokenize("[SHOT CUT] wide shot.")[0] == "[SHOT CUT]"


def test_tokenizer_special_ids_and_truncation():
  assert (vocab.PAD_ID, vocab.NULL_ID) == (augment.PAD_TOKEN,
                                           augment.NULL_TOKEN)
  assert vocab.UNK_ID == 2 and vocab.ID_OF["[SHOT CUT]"] == 3
  ids, length = vocab.encode("", 4)
  assert length == 0 and ids.tolist() == [0, 0, 0, 0]
  ids, length = vocab.encode("Character 1 dances", 5)
  assert length == 3 and ids.tolist()[2:] == [vocab.UNK_ID, 0, 0]
  ids, length = vocab.encode("close shot, Character 1 moves left.", 3)
  assert length == 3 and vocab.decode(ids, length) == "close shot,"
  with pytest.raises(ValueError, match="exceed max_len=3"):
    vocab.encode("close shot, Character 1 moves left.", 3, truncate=False)
