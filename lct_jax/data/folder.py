"""A user's folder of real scenes -> scene records (and back, for examples).

Folder format (documented with an example in `data/README.md`):
  <src>/<scene_id>/scene.json
      {"global_prompt": str,
       "shots": [{"prompt": str, "has_cut": bool (optional), "video": "a.mp4"}
                 or {"prompt": str, "has_cut": bool (optional),
                     "latents": "a.npy"}, ...]}
  <src>/<scene_id>/<the files the shots name>
Optional precomputed text embeddings (for `model.text_mode='embeddings'`):
"global_prompt_embedding" / per shot "prompt_embedding" name `.npy` files
[L, D], and "global_prompt_pooled" / "prompt_pooled" `.npy` vectors [P];
either every group (global and all shots) has one or none does.
All shots of a scene are the same kind: "pixels" (videos, decoded with PyAV
to uint8 RGB [F, H, W, 3]) or "latents" (.npy, float16 [F, h, w, C]), and
share H, W (C). `has_cut` defaults to "the prompt starts with [SHOT CUT]".
Every problem raises `BadRecordError` naming the scene id, so a builder can
either stop on it or skip the scene and count it.
"""
from __future__ import annotations

import json
import os

import av
import numpy as np

from lct_jax.data.records import BadRecordError
from lct_jax.data.records import add_embeddings
from lct_jax.data.records import EMBEDDINGS
from lct_jax.data.records import POOLED
from lct_jax.data.records import split_embeddings
from lct_jax.data.records import split_shots
from lct_jax.data.records import validate_record
from lct_jax.data.synthetic import SHOT_CUT

KINDS = {"pixels": "video", "latents": "latents"}   # kind -> shot file key
SCENE_JSON = "scene.json"


def list_scenes(src: str) -> list[str]:
  """Scene ids (sub-folder names) under `src`, sorted so builds are stable."""
  if not os.path.isdir(src):
    raise FileNotFoundError(f"scene folder {src!r} does not exist")
  return sorted(d for d in os.listdir(src)
                if os.path.isdir(os.path.join(src, d)))


def read_video(path: str) -> np.ndarray:
  """Decodes every frame of a video file to uint8 RGB [F, H, W, 3]."""
  with av.open(path) as container:
    if not container.streams.video:
      raise ValueError("no video stream")
    stream = container.streams.video[0]
    frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    # The container's frame count (0 when unknown) catches a video whose
    # tail is lost but whose index survived, which otherwise decodes short.
    expected = stream.frames
  if not frames:
    raise ValueError("no decodable frames")
  if expected and len(frames) != expected:
    raise ValueError(f"decoded {len(frames)} of {expected} frames")
  return np.stack(frames)


def _read_npy(path: str, ndim: int, what: str) -> np.ndarray:
  # allow_pickle=False: a scene folder is untrusted input.
  x = np.load(path, allow_pickle=False)
  if x.ndim != ndim:
    raise ValueError(f"{what} must have {ndim} dimensions, got shape "
                     f"{x.shape}")
  if not np.issubdtype(x.dtype, np.floating):
    raise ValueError(f"{what} must be floating point, got {x.dtype}")
  return x.astype(np.float16)


def _read_latents(path: str) -> np.ndarray:
  return _read_npy(path, 4, "latents [F, h, w, C]")


def load_json(scene_id: str, scene_dir: str) -> dict:
  path = os.path.join(scene_dir, SCENE_JSON)
  if not os.path.isfile(path):
    raise BadRecordError(scene_id, f"missing file {SCENE_JSON}")
  try:
    with open(path, encoding="utf-8") as f:
      meta = json.load(f)
  except (ValueError, UnicodeDecodeError) as e:
    raise BadRecordError(scene_id, f"invalid JSON in {SCENE_JSON}: {e}") from e
  if not isinstance(meta, dict) or not isinstance(meta.get("global_prompt"),
                                                  str):
    raise BadRecordError(scene_id, f"{SCENE_JSON} needs a string "
                         "'global_prompt'")
  shots = meta.get("shots")
  if not isinstance(shots, list) or not shots:
    raise BadRecordError(scene_id, "empty scene (no shots)")
  return meta


def shot_kind(scene_id: str, k: int, shot) -> str:
  if not isinstance(shot, dict) or not isinstance(shot.get("prompt"), str):
    raise BadRecordError(scene_id, f"shot {k} needs a string 'prompt'")
  kinds = [kind for kind, key in KINDS.items() if key in shot]
  if len(kinds) != 1:
    raise BadRecordError(scene_id, f"shot {k} needs exactly one of 'video' "
                         "and 'latents'")
  return kinds[0]


def has_cut(scene_id: str, k: int, shot: dict) -> bool:
  value = shot.get("has_cut", shot["prompt"].startswith(SHOT_CUT))
  if not isinstance(value, bool):
    raise BadRecordError(scene_id, f"shot {k}: has_cut must be true/false")
  return value


def check_file_name(scene_id: str, where: str, name) -> None:
  if not isinstance(name, str) or os.path.isabs(name) or ".." in name:
    # Keep reads inside the scene's own folder.
    raise BadRecordError(scene_id, f"{where}: bad file name {name!r}")


def read_file(scene_id: str, scene_dir: str, where: str, name, read):
  """read(path) of a file the scene names; any failure -> BadRecordError."""
  check_file_name(scene_id, where, name)
  path = os.path.join(scene_dir, name)
  if not os.path.isfile(path):
    raise BadRecordError(scene_id, f"{where}: missing file {name}")
  try:
    return read(path)
  except Exception as e:  # Any decoder failure means a corrupt file.
    raise BadRecordError(scene_id, f"{where}: cannot read {name} "
                         f"({type(e).__name__}: {e})") from e


def _read_shot(scene_id: str, scene_dir: str, k: int, kind: str,
               name) -> np.ndarray:
  return read_file(scene_id, scene_dir, f"shot {k}", name,
                    read_video if kind == "pixels" else _read_latents)


EMBEDDING_KEYS = (("global_prompt_embedding", "prompt_embedding"),
                  ("global_prompt_pooled", "prompt_pooled"))


def _read_embeddings(scene_id: str, scene_dir: str, meta: dict) -> dict:
  """The optional embedding fields of the record (empty dict when none)."""
  out = {}
  for (global_key, shot_key), ndim, field in zip(
      EMBEDDING_KEYS, (2, 1), ("embeddings", "pooled")):
    holders = [meta] + meta["shots"]
    keys = [global_key] + [shot_key] * len(meta["shots"])
    have = [key in h for h, key in zip(holders, keys)]
    if not any(have):
      continue
    if not all(have):
      raise BadRecordError(scene_id, f"'{global_key}' / '{shot_key}' must be "
                           "given for the global prompt and every shot, or "
                           "for none")
    arrays = [read_file(
        scene_id, scene_dir, "global prompt" if g == 0 else f"shot {g - 1}",
        h[key], lambda p: _read_npy(p, ndim, f"prompt {field}"))
              for g, (h, key) in enumerate(zip(holders, keys))]
    if len({a.shape[-1] for a in arrays}) != 1:
      raise BadRecordError(scene_id, f"prompt {field} widths differ: "
                           f"{[a.shape[-1] for a in arrays]}")
    out[field] = arrays
  if "pooled" in out and "embeddings" not in out:
    raise BadRecordError(scene_id, "pooled prompt vectors need prompt "
                         "embeddings too")
  if not out:
    return {}
  return add_embeddings({}, out["embeddings"],
                        np.stack(out["pooled"]) if "pooled" in out else None)


def read_scene(src: str, scene_id: str, kind: str | None = None) -> dict:
  """One scene folder -> a validated record.

  Args:
    src: the folder holding one sub-folder per scene.
    scene_id: the sub-folder's name, which becomes the record's scene id.
    kind: "pixels" or "latents" to require that kind; None takes the kind of
      the scene's shots.

  Raises:
    BadRecordError: naming the scene id, for any missing, unreadable or
      inconsistent input.
  """
  scene_dir = os.path.join(src, scene_id)
  meta = load_json(scene_id, scene_dir)
  kinds = {shot_kind(scene_id, k, s) for k, s in enumerate(meta["shots"])}
  if len(kinds) != 1:
    raise BadRecordError(scene_id, "shots mix videos and latents; a scene "
                         "must use one kind")
  (scene_kind,) = kinds
  if kind is not None and scene_kind != kind:
    raise BadRecordError(scene_id, f"scene holds {scene_kind} but this "
                         f"dataset is {kind}")
  videos, prompts, cuts = [], [], []
  for k, shot in enumerate(meta["shots"]):
    video = _read_shot(scene_id, scene_dir, k, scene_kind,
                       shot[KINDS[scene_kind]])
    if videos and video.shape[1:] != videos[0].shape[1:]:
      raise BadRecordError(scene_id, f"shot {k} has frame shape "
                           f"{video.shape[1:]} but shot 0 has "
                           f"{videos[0].shape[1:]}")
    videos.append(video)
    prompts.append(shot["prompt"])
    cuts.append(has_cut(scene_id, k, shot))
  field = "frames" if scene_kind == "pixels" else "latents"
  return validate_record({
      "scene_id": scene_id,
      "global_prompt": meta["global_prompt"],
      "shot_prompts": prompts,
      "shot_num_frames": np.array([len(v) for v in videos], np.int32),
      "has_cut": np.array(cuts, bool),
      field: np.concatenate(videos, axis=0),
      "factors_json": json.dumps(meta["factors"]) if "factors" in meta else "",
      "encoding_json": (json.dumps(meta["encoding"]) if "encoding" in meta
                        else ""),
      **_read_embeddings(scene_id, scene_dir, meta),
  })


def detect_kind(src: str) -> str:
  """The kind of the first scene whose scene.json names one (for the CLI)."""
  for scene_id in list_scenes(src):
    try:
      meta = load_json(scene_id, os.path.join(src, scene_id))
      return shot_kind(scene_id, 0, meta["shots"][0])
    except BadRecordError:
      continue
  raise ValueError(f"no readable scene.json under {src!r}")


def write_video(path: str, frames: np.ndarray, fps: int = 8, *,
                lossless: bool = True) -> None:
  """Writes uint8 RGB [F, H, W, 3] as H.264: lossless RGB (crf 0, for data),
  or with `lossless=False` yuv420p crf 12 (smaller, plays in browsers)."""
  codec, pix_fmt, crf = (("libx264rgb", "rgb24", "0") if lossless
                         else ("libx264", "yuv420p", "12"))
  with av.open(path, "w") as container:
    stream = container.add_stream(codec, rate=fps)
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = pix_fmt
    stream.options = {"crf": crf}
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(
          np.ascontiguousarray(frame), "rgb24")))
    container.mux(stream.encode())


def write_embeddings(scene_dir: str, meta: dict, embeddings: list,
                     pooled: list | None = None) -> None:
  """Saves group g's embeddings [L, D] (and pooled [P]) as .npy files in
  `scene_dir` and names them in `meta` (group 0: the global prompt, g >= 1:
  meta["shots"][g - 1]), as `read_scene` reads them back."""
  holders = [meta] + meta["shots"]
  for g, emb in enumerate(embeddings):
    prefix = "global" if g == 0 else f"shot_{g:02d}"
    key_e, key_p = EMBEDDING_KEYS[0][g > 0], EMBEDDING_KEYS[1][g > 0]
    holders[g][key_e] = f"{prefix}_text.npy"
    np.save(os.path.join(scene_dir, holders[g][key_e]),
            np.asarray(emb, np.float16))
    if pooled is not None and pooled[g] is not None:
      holders[g][key_p] = f"{prefix}_pooled.npy"
      np.save(os.path.join(scene_dir, holders[g][key_p]),
              np.asarray(pooled[g], np.float16))


def write_scene(src: str, record: dict) -> str:
  """Writes a record as `<src>/<scene_id>/` in the folder format.

  The inverse of `read_scene` (pixels as lossless MP4, latents as .npy);
  used for tests and the example, and handy for converting data.
  """
  record = validate_record(record)
  scene_dir = os.path.join(src, record["scene_id"])
  os.makedirs(scene_dir, exist_ok=True)
  pixels = "frames" in record
  shots = []
  for k, (video, prompt, cut) in enumerate(zip(
      split_shots(record), record["shot_prompts"], record["has_cut"])):
    name = f"shot_{k + 1:02d}." + ("mp4" if pixels else "npy")
    if pixels:
      write_video(os.path.join(scene_dir, name), video)
    else:
      np.save(os.path.join(scene_dir, name), video.astype(np.float16))
    shots.append({"prompt": prompt, "has_cut": bool(cut),
                  KINDS["pixels" if pixels else "latents"]: name})
  meta = {"global_prompt": record["global_prompt"], "shots": shots}
  if EMBEDDINGS in record:
    pooled = record.get(POOLED)
    write_embeddings(scene_dir, meta, split_embeddings(record),
                     None if pooled is None else list(pooled))
  if record["factors_json"]:
    meta["factors"] = json.loads(record["factors_json"])
  if record["encoding_json"]:
    meta["encoding"] = json.loads(record["encoding_json"])
  with open(os.path.join(scene_dir, SCENE_JSON), "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=1)
  return scene_dir
