"""The scene record: one scene per record, the same for real and synthetic.

A record is a flat dict (flat so that TFDS stores it without nested
variable-shape sequences; shots are concatenated along the frame axis):
  scene_id          str
  global_prompt     str
  shot_prompts      list[str]              N entries, in shot order
  shot_num_frames   int32 [N]              frames of each shot (>= 1)
  has_cut           bool  [N]              the prompt starts with [SHOT CUT]
  frames            uint8 [sum F, H, W, 3] pixels, shots concatenated, or
  latents           float16 [sum F, h, w, C]  precomputed latents (one of the two)
  factors_json      str                    per-shot ground truth (JSON list of
                                           dicts), "" when unknown
  encoding_json     str                    how the scene was encoded for a
                                           latent model (`encode_scenes.py`:
                                           VAE, frames kept, crop), "" when
                                           it was not
Optional precomputed text embeddings (for `model.text_mode='embeddings'`),
per group g = 0 (global prompt), 1..N (shots), concatenated like the video:
  prompt_embedding_len  int32 [N + 1]           rows of each group (>= 0)
  prompt_embeddings     float16 [sum L_g, D]    the groups' token embeddings
  prompt_pooled         float16 [N + 1, P]      pooled vectors (optional)
A record without them stores `prompt_embedding_len` of size 0 (TFDS keeps
one feature spec for all records); `validate_record` then drops the three
keys, so "has embeddings" is `EMBEDDINGS in record`.
`validate_record` raises `BadRecordError` naming the scene id and the field.
"""
from __future__ import annotations

import json

import numpy as np

from lct_jax.data.synthetic import Scene

REQUIRED = ("scene_id", "global_prompt", "shot_prompts", "shot_num_frames",
            "has_cut")
EMBEDDINGS, EMBEDDING_LEN, POOLED = ("prompt_embeddings", "prompt_embedding_len",
                                     "prompt_pooled")


class BadRecordError(ValueError):
  """A record that cannot be a scene; the message names scene id and field."""

  def __init__(self, scene_id, problem: str):
    self.scene_id = scene_id
    super().__init__(f"bad scene record {scene_id!r}: {problem}")


def scene_to_record(scene: Scene) -> dict:
  """A generated `Scene` -> its record (pixels, with ground-truth factors)."""
  return {
      "scene_id": scene.scene_id,
      "global_prompt": scene.global_prompt,
      "shot_prompts": [s.prompt for s in scene.shots],
      "shot_num_frames": np.array([len(s.frames) for s in scene.shots],
                                  np.int32),
      "has_cut": np.array([s.has_cut for s in scene.shots], bool),
      "frames": np.concatenate([s.frames for s in scene.shots], axis=0),
      "factors_json": json.dumps([s.factors for s in scene.shots]),
  }


def _text(x) -> str:
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def validate_record(record: dict) -> dict:
  """Checks a record and normalises text fields (TFDS returns bytes).

  Returns the normalised record; raises BadRecordError otherwise.
  """
  scene_id = _text(record.get("scene_id", "<missing scene_id>"))
  missing = [k for k in REQUIRED if k not in record]
  if missing:
    raise BadRecordError(scene_id, f"missing fields {missing}")
  has_frames, has_latents = "frames" in record, "latents" in record
  if has_frames == has_latents:
    raise BadRecordError(scene_id, "needs exactly one of 'frames' (pixels) "
                         "and 'latents'")
  video = np.asarray(record["frames"] if has_frames else record["latents"])
  field = "frames" if has_frames else "latents"
  nf = np.asarray(record["shot_num_frames"])
  prompts = [_text(p) for p in record["shot_prompts"]]
  has_cut = np.asarray(record["has_cut"])
  if nf.ndim != 1 or nf.size == 0:
    raise BadRecordError(scene_id, "empty scene (no shots)")
  if np.any(nf < 1):
    raise BadRecordError(scene_id, f"shot_num_frames {nf.tolist()} has a "
                         "shot without frames")
  if len(prompts) != nf.size or has_cut.shape != nf.shape:
    raise BadRecordError(scene_id, f"{nf.size} shots but {len(prompts)} "
                         f"prompts and {has_cut.size} has_cut flags")
  if video.ndim != 4:
    raise BadRecordError(scene_id, f"{field} must be [frames, H, W, C], got "
                         f"shape {video.shape}")
  if video.shape[0] != int(nf.sum()):
    raise BadRecordError(scene_id, f"{field} holds {video.shape[0]} frames "
                         f"but shot_num_frames sums to {int(nf.sum())} "
                         "(truncated or corrupt record?)")
  if has_frames and (video.dtype != np.uint8 or video.shape[-1] != 3):
    raise BadRecordError(scene_id, f"frames must be uint8 RGB, got "
                         f"{video.dtype} with {video.shape[-1]} channels")
  out = dict(record)
  _validate_embeddings(scene_id, out, nf.size)
  out.update(scene_id=scene_id, global_prompt=_text(record["global_prompt"]),
             shot_prompts=prompts, shot_num_frames=nf.astype(np.int32),
             has_cut=has_cut.astype(bool),
             factors_json=_text(record.get("factors_json", "")),
             encoding_json=_text(record.get("encoding_json", "")))
  return out


def _validate_embeddings(scene_id, out: dict, num_shots: int) -> None:
  """Checks the optional embedding fields in place; drops empty ones."""
  lens = np.asarray(out.get(EMBEDDING_LEN, np.zeros((0,), np.int32)))
  if lens.size == 0:
    for key in (EMBEDDINGS, EMBEDDING_LEN, POOLED):
      out.pop(key, None)
    return
  if lens.shape != (num_shots + 1,) or np.any(lens < 0):
    raise BadRecordError(scene_id, f"{EMBEDDING_LEN} must hold N + 1 = "
                         f"{num_shots + 1} lengths >= 0 (global prompt, then "
                         f"each shot), got {lens.tolist()}")
  emb = np.asarray(out.get(EMBEDDINGS))
  if emb.ndim != 2 or emb.shape[0] != int(lens.sum()):
    raise BadRecordError(scene_id, f"{EMBEDDINGS} must be [sum of "
                         f"{EMBEDDING_LEN} = {int(lens.sum())}, D], got shape "
                         f"{emb.shape} (truncated or corrupt record?)")
  if not np.issubdtype(emb.dtype, np.floating):
    raise BadRecordError(scene_id, f"{EMBEDDINGS} must be floating point, "
                         f"got {emb.dtype}")
  pooled = np.asarray(out.get(POOLED, np.zeros((0, 0), np.float16)))
  if pooled.size == 0:
    out.pop(POOLED, None)
  elif pooled.ndim != 2 or pooled.shape[0] != num_shots + 1:
    raise BadRecordError(scene_id, f"{POOLED} must be [N + 1 = "
                         f"{num_shots + 1}, P], got shape {pooled.shape}")
  out[EMBEDDING_LEN] = lens.astype(np.int32)


def add_embeddings(record: dict, group_embeddings: list[np.ndarray],
                   pooled_GxP: np.ndarray | None = None) -> dict:
  """A copy of `record` with per-group embeddings [L_g, D] (g = 0..N)."""
  out = dict(record)
  out[EMBEDDING_LEN] = np.array([len(e) for e in group_embeddings], np.int32)
  out[EMBEDDINGS] = np.concatenate(group_embeddings, 0).astype(np.float16)
  if pooled_GxP is not None:
    out[POOLED] = np.asarray(pooled_GxP, np.float16)
  return out


def split_embeddings(record: dict) -> list[np.ndarray]:
  """The record's prompt embeddings as one [L_g, D] array per group."""
  bounds = np.cumsum(record[EMBEDDING_LEN])[:-1]
  return np.split(np.asarray(record[EMBEDDINGS]), bounds, axis=0)


def split_shots(record: dict) -> list[np.ndarray]:
  """The record's video as one array per shot."""
  video = record["frames"] if "frames" in record else record["latents"]
  bounds = np.cumsum(record["shot_num_frames"])[:-1]
  return np.split(np.asarray(video), bounds, axis=0)
