"""One scene record -> one example at the config's static shapes.

Per record (DESIGN.md section 7), with the example's own seeded RNG:
  1. `validate_record`; the frame grid must equal the config's
     (`scene.height`, `scene.width`), latent channels `model.in_channels`;
  2. keep up to `scene.max_shots` CONTIGUOUS shots (a uniformly random window
     when the scene has more), in order;
  3. per shot keep up to `scene.frames` contiguous frames (a random window
     when longer); pixels -> float32 in [-1, 1] as `x / 127.5 - 1` rounded
     once (0 -> -1, 255 -> 1 exactly; `pixels_to_latents`), precomputed
     latents -> float32 unchanged;
  4. zero-pad frames to `scene.frames` and shots to `scene.max_shots`;
  5. text: group 0 the global prompt, groups 1..n the kept shots' prompts,
     `vocab.encode(text, scene.max_text_len)` (truncating); padded groups
     are all zeros with length 0.
A bad record does not raise here: it becomes a marker `{BAD_ID, BAD_PROBLEM}`
so that the consuming iterator decides (raise or skip and count) in the
main process, the same with or without worker processes.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from lct_jax.data import records, vocab

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

  @classmethod
  def from_config(cls, config) -> ExampleSpec:
    s = config.scene
    return cls(max_shots=s.max_shots, frames=s.frames, height=s.height,
               width=s.width, channels=config.model.in_channels,
               max_text_len=s.max_text_len)


def pixels_to_latents(frames_u8: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] -> float32 [-1, 1]; the demo trains in pixel space.

  `(2x - 255) / 255`: the numerator is exact in float32, so the one division
  rounds correctly: the result is x / 127.5 - 1 rounded once to float32.
  """
  x = frames_u8.astype(np.float32)
  return (x * np.float32(2) - np.float32(255)) / np.float32(255)


def _check_video(record: dict, spec: ExampleSpec) -> None:
  is_pixels = "frames" in record
  video = np.asarray(record["frames"] if is_pixels else record["latents"])
  sid = record["scene_id"]
  if video.shape[1:3] != (spec.height, spec.width):
    raise records.BadRecordError(
        sid, f"frame size {video.shape[1]}x{video.shape[2]} but the config "
        f"grid (scene.height x scene.width) is {spec.height}x{spec.width}")
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


def record_to_example(record: dict, rng: np.random.Generator,
                      spec: ExampleSpec) -> dict:
  """-> example dict (batch keys + INFO_KEYS), or a bad-record marker.

  A marker coming in (the record failed while being read) passes through.
  """
  if BAD_ID in record:
    return record
  try:
    record = records.validate_record(record)
    _check_video(record, spec)
  except records.BadRecordError as e:
    return bad_marker(e)
  N, F, L = spec.max_shots, spec.frames, spec.max_text_len
  shots = records.split_shots(record)
  n_total = len(shots)
  n = min(n_total, N)
  first_shot = int(rng.integers(0, n_total - n + 1))
  is_pixels = "frames" in record

  latents_NxFxHxWxC = np.zeros((N, F, spec.height, spec.width, spec.channels),
                               np.float32)
  num_frames_N = np.zeros((N,), np.int32)
  first_frame_N = np.zeros((N,), np.int32)
  text_GxL = np.zeros((N + 1, L), np.int32)
  text_len_G = np.zeros((N + 1,), np.int32)
  text_GxL[0], text_len_G[0] = vocab.encode(record["global_prompt"], L)
  for k in range(n):
    shot = shots[first_shot + k]
    f = min(len(shot), F)
    start = int(rng.integers(0, len(shot) - f + 1))
    window = shot[start:start + f]
    latents_NxFxHxWxC[k, :f] = (pixels_to_latents(window) if is_pixels
                                else window.astype(np.float32))
    num_frames_N[k], first_frame_N[k] = f, start
    text_GxL[k + 1], text_len_G[k + 1] = vocab.encode(
        record["shot_prompts"][first_shot + k], L)
  return {
      "latents": latents_NxFxHxWxC,
      "num_frames": num_frames_N,
      "text": text_GxL,
      "text_len": text_len_G,
      SCENE_ID: record["scene_id"],
      FIRST_SHOT: np.int32(first_shot),
      FIRST_FRAME: first_frame_N,
  }
