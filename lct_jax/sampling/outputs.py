"""A sampled scene on disk: per shot and per scene MP4, GIF, contact-sheet
PNG and latents (.npy), plus settings.json (and, for the synthetic pixel
model, the consistency scores of `lct_jax.data.consistency`)."""
from __future__ import annotations

import json
import os

import numpy as np

from lct_jax.data import consistency
from lct_jax.sampling import media


def is_synthetic_model(config) -> bool:
  """The demo kind: pixel-space RGB on the synthetic scenes' vocabulary."""
  return (config.data.source in ("synthetic", "tfds_synthetic")
          and config.model.in_channels == 3
          and config.model.text_mode == "tokens")


def write_scene(out_dir: str, shots_latents: list, num_frames: list[int],
                settings: dict, *, config, prompts: list[str] | None = None,
                global_prompt: str | None = None, fps: int = 4,
                decode=None) -> dict:
  """Writes everything; returns settings (with scores when computed).

  `decode`: latents, frames -> uint8 frames (`decode.vae_decoder`); default
  `media.to_frames` (pixels as they are, other latents for a look only).
  """
  os.makedirs(out_dir, exist_ok=True)
  decode = decode or media.to_frames
  frames = [decode(z, n) for z, n in zip(shots_latents, num_frames)]
  big = [media.enlarge(f) for f in frames]
  wrote_mp4 = True
  for i, (z, f) in enumerate(zip(shots_latents, big)):
    stem = os.path.join(out_dir, f"shot_{i:02d}")
    np.save(stem + ".npy", np.asarray(z)[:num_frames[i]])
    wrote_mp4 &= media.write_mp4(stem + ".mp4", f, fps)
    media.write_gif(stem + ".gif", f, fps)
    media.write_png(stem + ".png", media.contact_sheet([f]))
  scene = np.concatenate(big, axis=0)
  wrote_mp4 &= media.write_mp4(os.path.join(out_dir, "scene.mp4"), scene, fps)
  media.write_gif(os.path.join(out_dir, "scene.gif"), scene, fps)
  media.write_png(os.path.join(out_dir, "scene_contact.png"),
                  media.contact_sheet(big))
  settings = dict(settings)
  if not wrote_mp4:
    settings["mp4"] = "skipped: PyAV is not installed (pip install av)"
  if prompts is not None and is_synthetic_model(config):
    scores = consistency.score_scene(frames, prompts,
                                     global_prompt=global_prompt)
    settings["consistency"] = _jsonable(scores)
  with open(os.path.join(out_dir, "settings.json"), "w") as f:
    json.dump(_jsonable(settings), f, indent=1, sort_keys=True)
  return settings


def _jsonable(x):
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (np.floating, float)):
    return None if np.isnan(x) else float(x)
  if isinstance(x, np.integer):
    return int(x)
  return x
