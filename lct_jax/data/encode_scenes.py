"""A scene folder of real videos -> the same scenes encoded for a
latent-space model: VAE latents and text-encoder embeddings.

  report = encode_folder(src, dst, vae=vae, text_encoder=enc)

Reads `<src>/<scene_id>/` in the folder format (`folder.py`) and writes
`<dst>/<scene_id>/` in the same format, with each shot's video replaced by
its latents (`.npy`, float16 [f, h, w, C]: the posterior mean times the
VAE's scaling factor, `lct_jax.vae.to_latents`) and, with a text encoder,
the global prompt's and every shot's embeddings and pooled vectors (`.npy`).
`data/build.py folder --vae DIR --text_encoders DIR` runs this, then builds
the dataset from `dst`.

Rules, each stated in the scene's `encoding` entry, which the record keeps
as `encoding_json`:
  * frames: the VAE maps 1 + t k frames to 1 + k latent frames (t = 4 for
    HunyuanVideo), so a shot keeps its first 1 + t k frames, k as large as
    the video allows. A one-frame video is an image (one latent frame); one
    of 2 .. t frames is too short and its scene is skipped.
  * size: with `height` and `width` every frame is scaled to cover that size
    and centre-cropped (`resize.cover_crop`; the transformer needs one grid
    per dataset or per bucket); without, it is centre-cropped to multiples
    of the VAE's spatial factor.
Resuming: a scene is written to a temporary folder and renamed into place
when complete, so `<dst>/<scene_id>/` exists only for finished scenes; a
rerun skips those. A scene that cannot be read (a missing or undecodable
video, a bad scene.json) or has a too-short video is named, skipped and
counted (`EncodeReport`), never half-written.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil

import jax.numpy as jnp
import numpy as np
import tqdm

from lct_jax import vae as vae_lib
from lct_jax.data import folder
from lct_jax.data import resize
from lct_jax.data.records import BadRecordError
from lct_jax.data.transform import pixels_to_latents

TMP_PREFIX = ".partial-"   # unfinished scenes; never a scene id
REPORT = "encode_report.json"


@dataclasses.dataclass
class EncodeReport:
  written: list[str] = dataclasses.field(default_factory=list)
  already_done: list[str] = dataclasses.field(default_factory=list)
  skipped: dict[str, str] = dataclasses.field(default_factory=dict)  # id -> why

  def summary(self) -> str:
    return (f"{len(self.written)} scenes encoded, {len(self.already_done)} "
            f"already there, {len(self.skipped)} skipped")


def kept_frames(num_frames: int, temporal_factor: int) -> int:
  """Frames a shot keeps under the VAE's 1 + t k rule (raises if too short)."""
  if num_frames == 1:
    return 1
  if num_frames < 1 + temporal_factor:
    raise ValueError(f"{num_frames} frames is too short for the VAE, which "
                     f"needs 1 + {temporal_factor} k frames (k >= 1; a "
                     "single frame is an image)")
  return 1 + temporal_factor * ((num_frames - 1) // temporal_factor)


def fit_frames(frames_u8: np.ndarray, spatial_factor: int,
               height: int | None, width: int | None) -> np.ndarray:
  """Cover-crop to (height, width), or centre-crop to multiples of the
  spatial factor when no size is given."""
  if height is not None:
    return resize.cover_crop(frames_u8, height, width)
  _, h, w, _ = frames_u8.shape
  nh, nw = h - h % spatial_factor, w - w % spatial_factor
  if nh == 0 or nw == 0:
    raise ValueError(f"frames of {h}x{w} are smaller than the VAE's spatial "
                     f"factor {spatial_factor}")
  top, left = (h - nh) // 2, (w - nw) // 2
  return frames_u8[:, top:top + nh, left:left + nw]


class SceneEncoder:
  """Encodes one scene folder; `vae` and `text_encoder` may each be None
  (then videos are copied / no embeddings are added), not both."""

  def __init__(self, vae=None, text_encoder=None, *, tiling=None,
               height: int | None = None, width: int | None = None,
               sources: dict | None = None):
    if vae is None and text_encoder is None:
      raise ValueError("nothing to encode: give a VAE, a text encoder or both")
    if (height is None) != (width is None):
      raise ValueError("give both height and width, or neither")
    if vae is not None and height is not None:
      sf = vae.config.spatial_factor
      if height % sf or width % sf:
        raise ValueError(f"height x width {height}x{width} must be multiples "
                         f"of the VAE's spatial factor {sf}")
    self.vae, self.text_encoder, self.tiling = vae, text_encoder, tiling
    self.height, self.width = height, width
    self.sources = dict(sources or {})    # e.g. {"vae": path}, for the record

  def _latents(self, frames_u8: np.ndarray) -> tuple[np.ndarray, dict]:
    c = self.vae.config
    keep = kept_frames(len(frames_u8), c.temporal_factor)
    fitted = fit_frames(frames_u8[:keep], c.spatial_factor, self.height,
                        self.width)
    video = jnp.asarray(pixels_to_latents(fitted))[None]
    latents = vae_lib.to_latents(self.vae, video, self.tiling)
    cut = {"source_frames": len(frames_u8), "frames": keep,
           "source_size": list(frames_u8.shape[1:3]),
           "size": list(fitted.shape[1:3]),
           "latent_shape": list(latents.shape[1:])}
    return np.asarray(latents[0], np.float16), cut

  def encode(self, src: str, scene_id: str, out_dir: str) -> None:
    """Writes the encoded scene into `out_dir` (which must not exist)."""
    scene_dir = os.path.join(src, scene_id)
    meta = folder.load_json(scene_id, scene_dir)
    os.makedirs(out_dir)
    out = {"global_prompt": meta["global_prompt"], "shots": []}
    if "factors" in meta:
      out["factors"] = meta["factors"]
    notes = {**self.sources, "shots": []}
    if self.vae is not None:
      notes.update(scaling_factor=self.vae.config.scaling_factor,
                   rule=f"first 1 + {self.vae.config.temporal_factor} k "
                   "frames of each shot")
    for k, shot in enumerate(meta["shots"]):
      if folder.shot_kind(scene_id, k, shot) != "pixels":
        raise BadRecordError(scene_id, f"shot {k} holds latents already; "
                             "encode scenes of videos")
      name = shot["video"]
      entry = {"prompt": shot["prompt"],
               "has_cut": folder.has_cut(scene_id, k, shot)}
      if self.vae is None:
        folder.check_file_name(scene_id, f"shot {k}", name)
        shutil.copy(os.path.join(scene_dir, name), os.path.join(out_dir, name))
        entry["video"] = name
      else:
        frames = folder.read_file(scene_id, scene_dir, f"shot {k}", name,
                                  folder.read_video)
        try:
          latents, cut = self._latents(frames)
        except ValueError as e:
          raise BadRecordError(scene_id, f"shot {k} ({name}): {e}") from e
        entry["latents"] = f"shot_{k + 1:02d}.npy"
        np.save(os.path.join(out_dir, entry["latents"]), latents)
        notes["shots"].append({"video": name, **cut})
      out["shots"].append(entry)
    if self.text_encoder is not None:
      self._embed(out, out_dir)
    out["encoding"] = notes
    with open(os.path.join(out_dir, folder.SCENE_JSON), "w",
              encoding="utf-8") as f:
      json.dump(out, f, indent=1)

  def _embed(self, meta: dict, out_dir: str) -> None:
    texts = [meta["global_prompt"]] + [s["prompt"] for s in meta["shots"]]
    outs = [self.text_encoder(t) for t in texts]
    folder.write_embeddings(out_dir, meta, [e for e, _ in outs],
                            [p for _, p in outs])


def encode_folder(src: str, dst: str, encoder: SceneEncoder, *,
                  progress: bool = True) -> EncodeReport:
  """Encodes every scene of `src` not yet in `dst`; -> what happened.

  Also writes `<dst>/encode_report.json`: the scenes this run skipped and
  why (a rerun tries them again).
  """
  ids = folder.list_scenes(src)
  os.makedirs(dst, exist_ok=True)
  for stale in os.listdir(dst):         # left by an interrupted run
    if stale.startswith(TMP_PREFIX):
      shutil.rmtree(os.path.join(dst, stale))
  report = EncodeReport()
  for scene_id in tqdm.tqdm(ids, desc="encoding scenes", unit="scene",
                            disable=not progress):
    final = os.path.join(dst, scene_id)
    if os.path.isfile(os.path.join(final, folder.SCENE_JSON)):
      report.already_done.append(scene_id)
      continue
    partial = os.path.join(dst, TMP_PREFIX + scene_id)
    try:
      encoder.encode(src, scene_id, partial)
    except BadRecordError as e:
      shutil.rmtree(partial, ignore_errors=True)
      report.skipped[scene_id] = str(e)
      logging.warning("skipping scene %s: %s", scene_id, e)
      continue
    os.replace(partial, final)
    report.written.append(scene_id)
  with open(os.path.join(dst, REPORT), "w") as f:   # a rerun retries these
    json.dump({"skipped": report.skipped}, f, indent=1)
  return report
