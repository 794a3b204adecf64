"""One scene record -> one example at the config's static shapes.

Per record (docs/design.md section 10), with the example's own seeded RNG:
  1. `validate_record`; the frame grid must equal the example's grid (the
     config's `scene.height` x `scene.width`, or with aspect-ratio buckets
     the bucket's: pixels of another size are scaled to cover it and
     centre-cropped, latents must match), channels `model.in_channels`;
  2. keep up to `scene.max_shots` CONTIGUOUS shots (a uniformly random window
     when the scene has more), in order;
  3. per shot keep up to `scene.frames` contiguous frames (a random window
     when longer);
  4. frame-substitution hooks (`hooks`, e.g. `SubstituteFrame`) edit the kept
     shot windows, still as pixels or stored latents;
  5. pixels -> float32 in [-1, 1] as `x / 127.5 - 1` rounded once (0 -> -1,
     255 -> 1 exactly; `pixels_to_latents`), latents -> float32 unchanged;
     zero-pad frames to `scene.frames` and shots to `scene.max_shots`;
  6. text, group 0 the global prompt, groups 1..n the kept shots' prompts:
     tokens mode: `vocab.encode(text, scene.max_text_len)` (truncating);
     embeddings mode: the record's precomputed `[L_g, D]` embeddings cut to
     `scene.max_text_len` rows, float32, and the pooled vectors `[G, P]`
     when `model.use_pooled_text`. Padded groups are zeros with length 0.
A bad record does not raise here: it becomes a marker `{BAD_ID, BAD_PROBLEM}`
so that the consuming iterator decides (raise or skip and count) in the
main process, the same with or without worker processes.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from lct_jax.data import records, resize, vocab

# Keys of an example that are not batch keys: where the example came from.
SCENE_ID, FIRST_SHOT, FIRST_FRAME = "_scene_id", "_first_shot", "_first_frame"
INFO_KEYS = (SCENE_ID, FIRST_SHOT, FIRST_FRAME)
# Keys of a bad-record marker.
BAD_ID, BAD_PROBLEM = "_bad_scene_id", "_bad_problem"


@dataclasses.dataclass(frozen=True)
class ExampleSpec:
  """The static shapes an example is padded to (from the config)."""
  max_shots: int        # N
  frames: int           # F
  height: int           # H
  width: int            # W
  channels: int         # C
  max_text_len: int     # L
  text_mode: str = "tokens"   # or "embeddings"
  text_embed_dim: int = 0     # E (embeddings mode)
  pooled_dim: int = 0         # P (embeddings mode with pooled text; 0: none)

  @classmethod
  def from_config(cls, config) -> ExampleSpec:
    s, m = config.scene, config.model
    embeddings = m.text_mode == "embeddings"
    return cls(max_shots=s.max_shots, frames=s.frames, height=s.height,
               width=s.width, channels=m.in_channels,
               max_text_len=s.max_text_len, text_mode=m.text_mode,
               text_embed_dim=m.text_embed_dim if embeddings else 0,
               pooled_dim=m.pooled_dim if embeddings and m.use_pooled_text
               else 0)

  def on_grid(self, height: int, width: int) -> ExampleSpec:
    return dataclasses.replace(self, height=height, width=width)


class SubstituteFrame:
  """Frame-substitution hook: with probability p a kept shot becomes an image.

  The paper's image augmentation, in the pipeline: the shot keeps one of its
  frames (uniformly chosen), repeated `patch_t` times (one token frame). On
  real data this runs before a (causal) VAE would encode the shot, which the
  step-side `flow.p_frame` cannot. A hook is any picklable callable
  `(shots: list[[f, H, W, C] arrays], rng) -> shots` run in the transform.
  """

  def __init__(self, p: float, patch_t: int = 1):
    if not 0.0 <= p <= 1.0:
      raise ValueError(f"frame substitution probability {p} not in [0, 1]")
    self.p, self.patch_t = p, patch_t

  def __call__(self, shots: list[np.ndarray], rng: np.random.Generator):
    out = []
    for shot in shots:
      if rng.random() < self.p:
        frame = shot[int(rng.integers(0, len(shot)))]
        shot = np.repeat(frame[None], self.patch_t, axis=0)
      out.append(shot)
    return out


def pixels_to_latents(frames_u8: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] -> float32 [-1, 1]; the demo trains in pixel space.

  `(2x - 255) / 255`: the numerator is exact in float32, so the one division
  rounds correctly: the result is x / 127.5 - 1 rounded once to float32.
  """
  x = frames_u8.astype(np.float32)
  return (x * np.float32(2) - np.float32(255)) / np.float32(255)


def _check_video(record: dict, spec: ExampleSpec, bucketed: bool) -> None:
  is_pixels = "frames" in record
  video = np.asarray(record["frames"] if is_pixels else record["latents"])
  sid = record["scene_id"]
  if video.shape[1:3] != (spec.height, spec.width) and not (
      bucketed and is_pixels):
    where = ("its bucket's grid (data.buckets)" if bucketed else
             "the config grid (scene.height x scene.width)")
    raise records.BadRecordError(
        sid, f"frame size {video.shape[1]}x{video.shape[2]} but {where} is "
        f"{spec.height}x{spec.width}")
  if video.shape[3] != spec.channels:
    kind = "pixels (RGB)" if is_pixels else "latents"
    raise records.BadRecordError(
        sid, f"{kind} have {video.shape[3]} channels but model.in_channels="
        f"{spec.channels}")


def bad_marker(error: records.BadRecordError) -> dict:
  """The marker that stands in for a bad record down the pipeline."""
  # The problem without the "bad scene record 'id': " prefix, so that the
  # consumer can re-raise it as a BadRecordError of its own.
  problem = str(error).partition(f"{error.scene_id!r}: ")[2] or str(error)
  return {BAD_ID: str(error.scene_id), BAD_PROBLEM: problem}


def _check_text(record: dict, spec: ExampleSpec) -> None:
  if spec.text_mode != "embeddings":
    return
  sid = record["scene_id"]
  if records.EMBEDDINGS not in record:
    raise records.BadRecordError(
        sid, "no prompt embeddings, but model.text_mode='embeddings'")
  width = np.asarray(record[records.EMBEDDINGS]).shape[1]
  if width != spec.text_embed_dim:
    raise records.BadRecordError(
        sid, f"prompt embeddings have width {width} but model.text_embed_dim"
        f"={spec.text_embed_dim}")
  if spec.pooled_dim:
    pooled = record.get(records.POOLED)
    if pooled is None or pooled.shape[1] != spec.pooled_dim:
      got = "none" if pooled is None else f"width {pooled.shape[1]}"
      raise records.BadRecordError(
          sid, f"pooled prompt vectors: {got}, but model.pooled_dim="
          f"{spec.pooled_dim} (model.use_pooled_text)")


def _text_arrays(record: dict, spec: ExampleSpec, kept: range) -> dict:
  """text, text_len (and pooled) for group 0 and the kept shots."""
  N, L = spec.max_shots, spec.max_text_len
  groups = [0] + [k + 1 for k in kept]
  text_len_G = np.zeros((N + 1,), np.int32)
  if spec.text_mode == "tokens":
    prompts = [record["global_prompt"], *record["shot_prompts"]]
    text_GxL = np.zeros((N + 1, L), np.int32)
    for slot, g in enumerate(groups):
      text_GxL[slot], text_len_G[slot] = vocab.encode(prompts[g], L)
    return {"text": text_GxL, "text_len": text_len_G}
  embeddings = records.split_embeddings(record)
  text_GxLxE = np.zeros((N + 1, L, spec.text_embed_dim), np.float32)
  for slot, g in enumerate(groups):
    rows = embeddings[g][:L]
    text_GxLxE[slot, :len(rows)], text_len_G[slot] = rows, len(rows)
  out = {"text": text_GxLxE, "text_len": text_len_G}
  if spec.pooled_dim:
    pooled_GxP = np.zeros((N + 1, spec.pooled_dim), np.float32)
    pooled_GxP[:len(groups)] = np.asarray(record[records.POOLED])[groups]
    out["pooled"] = pooled_GxP
  return out


def record_to_example(record: dict, rng: np.random.Generator,
                      spec: ExampleSpec, hooks=(), grid=None) -> dict:
  """-> example dict (batch keys + INFO_KEYS), or a bad-record marker.

  `grid` (h, w): the example's bucket grid (aspect-ratio buckets); None is
  the spec's. A marker coming in (the record failed while being read)
  passes through.
  """
  if BAD_ID in record:
    return record
  bucketed = grid is not None
  if bucketed:
    spec = spec.on_grid(*grid)
  try:
    record = records.validate_record(record)
    _check_video(record, spec, bucketed)
    _check_text(record, spec)
  except records.BadRecordError as e:
    return bad_marker(e)
  N, F = spec.max_shots, spec.frames
  shots = records.split_shots(record)
  n_total = len(shots)
  n = min(n_total, N)
  first_shot = int(rng.integers(0, n_total - n + 1))
  is_pixels = "frames" in record

  latents_NxFxHxWxC = np.zeros((N, F, spec.height, spec.width, spec.channels),
                               np.float32)
  num_frames_N = np.zeros((N,), np.int32)
  first_frame_N = np.zeros((N,), np.int32)
  windows = []
  for k in range(n):
    shot = shots[first_shot + k]
    f = min(len(shot), F)
    start = int(rng.integers(0, len(shot) - f + 1))
    windows.append(shot[start:start + f])
    first_frame_N[k] = start
  for hook in hooks:
    windows = hook(windows, rng)
  for k, window in enumerate(windows):
    if is_pixels:
      window = resize.cover_crop(window, spec.height, spec.width)
    f = min(len(window), F)
    latents_NxFxHxWxC[k, :f] = (pixels_to_latents(window[:f]) if is_pixels
                                else window[:f].astype(np.float32))
    num_frames_N[k] = f
  return {
      "latents": latents_NxFxHxWxC,
      "num_frames": num_frames_N,
      **_text_arrays(record, spec, range(first_shot, first_shot + n)),
      SCENE_ID: record["scene_id"],
      FIRST_SHOT: np.int32(first_shot),
      FIRST_FRAME: first_frame_N,
  }
