"""Scene files: the JSON that `sample.py --scene` reads (see scenes/README.md).

  {"global_prompt": "Character 1 is a small red circle on a grey ...",
   "seed": 0, "steps": 20, "guidance": 2.0, "shift": 1.0, "t_c": 300,
   "shots": [
     {"prompt": "[SHOT CUT] wide shot, character 1 moves left.", "frames": 4},
     {"prompt": "...", "condition": "identity.png", "t_c": 0},
     {"prompt": "...", "seed": 7, "history": [0]}]}

Top-level keys: global_prompt and shots (required); seed, steps, guidance,
shift, t_c (optional; the sampler's defaults otherwise). Shot keys: prompt
(required); frames, seed, condition, t_c, history, prompt_embedding,
prompt_pooled (optional). `t_c` is on the paper's 0-1000 scale. A
`condition` is a video (.mp4, .gif, ...), an image (.png, .jpg) or a latent
(.npy, [F, h, w, C] or [h, w, C]); paths are relative to the scene file.
Every problem raises `SceneFileError` naming the file and the field.
"""
from __future__ import annotations

import json
import os

import numpy as np

from lct_jax.data import transform, vocab
from lct_jax.data.text_encoder import HashedTextEncoder
from lct_jax.sampling.sampler import Scene, Shot

TOP_KEYS = {"global_prompt", "shots", "seed", "steps", "guidance", "shift",
            "t_c", "global_prompt_embedding", "global_prompt_pooled"}
SHOT_KEYS = {"prompt", "frames", "seed", "condition", "t_c", "history",
             "prompt_embedding", "prompt_pooled"}
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class SceneFileError(ValueError):
  """A scene file problem, naming the file and the field."""


def _t_c(value, where: str, path: str) -> float:
  if not isinstance(value, (int, float)) or isinstance(value, bool) or not (
      0 <= value <= 1000):
    raise SceneFileError(f"{path}: {where}={value!r} must be a number in "
                         "[0, 1000] (the paper's timestep scale)")
  return float(value) / 1000.0


def read_media(file: str, where: str, path: str) -> np.ndarray:
  """-> float32 [F, H, W, C]: pixels as uint8-range floats, or latents."""
  if not os.path.isfile(file):
    raise SceneFileError(f"{path}: {where}: file {file!r} does not exist")
  ext = os.path.splitext(file)[1].lower()
  try:
    if ext == ".npy":
      x = np.load(file, allow_pickle=False)
      if x.ndim == 3:
        x = x[None]
      if x.ndim != 4 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"a latent must be float [F, h, w, C] or [h, w, C], "
                         f"got {x.dtype} {x.shape}")
      return x.astype(np.float32)
    if ext in IMAGE_EXT:
      try:
        from PIL import Image  # pylint: disable=g-import-not-at-top
      except ImportError as e:
        raise ValueError("reading images needs Pillow (pip install pillow); "
                         "or give the image as a 1-frame .mp4 / .npy") from e
      with Image.open(file) as im:
        pixels = np.asarray(im.convert("RGB"))[None]
    else:
      from lct_jax.data import folder  # pylint: disable=g-import-not-at-top  (PyAV is an optional extra)
      pixels = folder.read_video(file)
  except SceneFileError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise SceneFileError(f"{path}: {where}: cannot read {file!r} "
                         f"({type(e).__name__}: {e})") from e
  return pixels.astype(np.float32)


def _check_media(x, is_latent: bool, config, where: str, file: str,
                 path: str) -> np.ndarray:
  """Size, channels and frames against the model; pixels -> [-1, 1]."""
  s, m = config.scene, config.model
  F, H, W, C = x.shape
  if C != m.in_channels:
    kind = "latent" if is_latent else "pixel (RGB)"
    raise SceneFileError(
        f"{path}: {where}: {file!r} has {C} {kind} channels but the model "
        f"takes model.in_channels={m.in_channels}")
  if (H, W) != (s.height, s.width):
    raise SceneFileError(
        f"{path}: {where}: {file!r} is {H}x{W} but the model's grid is "
        f"scene.height x scene.width = {s.height}x{s.width}")
  if F > s.frames:
    raise SceneFileError(f"{path}: {where}: {file!r} has {F} frames, more "
                         f"than scene.frames={s.frames}; set the shot's "
                         f"\"frames\" to condition on its first frames")
  if not is_latent:
    # The demo models work in pixel space: latent = pixels in [-1, 1],
    # converted exactly as the training pipeline does.
    x = transform.pixels_to_latents(x.astype(np.uint8))
  out = np.zeros((s.frames, H, W, C), np.float32)
  out[:F] = x
  return out


class TextEncoder:
  """Prompts -> the model's text inputs (token ids, or embeddings)."""

  def __init__(self, config, encoder=None):
    """`encoder`: text -> (embeddings [L, D], pooled [P] or None) for
    embeddings-mode models, e.g. `data.hunyuan_text.HunyuanTextEncoder`;
    default the synthetic data's stand-in (`data.text_encoder`). Prompts
    with precomputed files (prompt_embedding / prompt_pooled) need none."""
    m = config.model
    self.mode, self.L = m.text_mode, config.scene.max_text_len
    self.width, self.pooled_dim = m.text_embed_dim, m.pooled_dim
    self.pooled = m.text_mode == "embeddings" and m.use_pooled_text
    if self.mode == "embeddings":
      self.encoder = encoder or HashedTextEncoder(
          m.text_embed_dim, m.pooled_dim if self.pooled else 0)

  def __call__(self, prompt: str, where: str, path: str, emb_file=None,
               pooled_file=None):
    if not isinstance(prompt, str):
      raise SceneFileError(f"{path}: {where} must be a string")
    if self.mode == "tokens":
      try:
        ids, n = vocab.encode(prompt, self.L, truncate=False,
                              allow_unknown=False)
      except ValueError as e:
        hint = "" if "vocabulary" in str(e) else " (scene.max_text_len)"
        raise SceneFileError(f"{path}: {where}: {e}{hint}") from None
      return ids, n, None
    if emb_file is not None:
      base = os.path.dirname(path)
      emb = np.load(os.path.join(base, emb_file), allow_pickle=False)
      pooled = (np.load(os.path.join(base, pooled_file), allow_pickle=False)
                if pooled_file else None)
    else:
      emb, pooled = self.encoder(prompt)
    if emb.ndim != 2 or emb.shape[1] != self.width:
      raise SceneFileError(f"{path}: {where}: prompt embeddings of shape "
                           f"{emb.shape}, but model.text_embed_dim="
                           f"{self.width} (wrong text encoder?)")
    if len(emb) > self.L:
      raise SceneFileError(f"{path}: {where}: {len(emb)} text tokens exceed "
                           f"scene.max_text_len={self.L}")
    out = np.zeros((self.L, emb.shape[1]), np.float32)
    out[:len(emb)] = emb
    if self.pooled and pooled is None:
      raise SceneFileError(f"{path}: {where}: the model wants pooled text "
                           "(prompt_pooled)")
    if self.pooled and np.shape(pooled) != (self.pooled_dim,):
      raise SceneFileError(f"{path}: {where}: pooled text of shape "
                           f"{np.shape(pooled)}, but model.pooled_dim="
                           f"{self.pooled_dim}")
    return out, len(emb), (np.asarray(pooled, np.float32) if self.pooled
                           else None)


def _check_keys(obj: dict, allowed, required, prefix: str) -> None:
  unknown = sorted(set(obj) - allowed)
  if unknown:
    raise SceneFileError(f"{prefix}unknown key(s) {unknown}; allowed: "
                         f"{sorted(allowed)}")
  for key in required:
    if key not in obj:
      raise SceneFileError(f"{prefix}missing required key {key!r}")


def load(path: str, config, *, max_shots: int | None = None,
         text_encoder=None) -> tuple[Scene, dict]:
  """-> (Scene, settings: the file's seed/steps/guidance/shift/t_c given).

  `max_shots`: the most shots the mode can take (joint: scene.max_shots).
  `text_encoder`: as for `TextEncoder`.
  """
  try:
    with open(path) as f:
      spec = json.load(f)
  except FileNotFoundError:
    raise SceneFileError(f"scene file {path!r} does not exist") from None
  except json.JSONDecodeError as e:
    raise SceneFileError(f"{path}: not valid JSON ({e})") from None
  if not isinstance(spec, dict):
    raise SceneFileError(f"{path}: the top level must be a JSON object")
  _check_keys(spec, TOP_KEYS, ("global_prompt", "shots"), f"{path}: ")
  shots = spec["shots"]
  if not isinstance(shots, list) or not shots:
    raise SceneFileError(f"{path}: 'shots' must be a non-empty list")
  if max_shots is not None and len(shots) > max_shots:
    raise SceneFileError(
        f"{path}: 'shots' has {len(shots)} shots, more than this model and "
        f"mode can hold ({max_shots}: scene.max_shots="
        f"{config.scene.max_shots}, the model's position capacity)")
  settings = {k: spec[k] for k in ("seed", "steps", "guidance", "shift")
              if k in spec}
  for k in ("seed", "steps"):
    if k in settings and (not isinstance(settings[k], int)
                          or isinstance(settings[k], bool) or settings[k] < 0
                          or (k == "steps" and settings[k] < 1)):
      raise SceneFileError(f"{path}: {k}={settings[k]!r} must be a "
                           f"{'positive' if k == 'steps' else 'non-negative'}"
                           " int")
  for k in ("guidance", "shift"):
    if k in settings and (not isinstance(settings[k], (int, float))
                          or settings[k] < 0 or (k == "shift"
                                                 and settings[k] == 0)):
      raise SceneFileError(f"{path}: {k}={settings[k]!r} must be a "
                           "non-negative number (shift: > 0)")
  if "t_c" in spec:
    settings["t_c"] = _t_c(spec["t_c"], "t_c", path)
  seed = settings.get("seed", 0)
  encode = TextEncoder(config, text_encoder)
  g_text, g_len, g_pooled = encode(
      spec["global_prompt"], "global_prompt", path,
      spec.get("global_prompt_embedding"), spec.get("global_prompt_pooled"))
  base = os.path.dirname(os.path.abspath(path))
  out = []
  for i, sh in enumerate(shots):
    where = f"shots[{i}]"
    if not isinstance(sh, dict):
      raise SceneFileError(f"{path}: {where} must be a JSON object")
    _check_keys(sh, SHOT_KEYS, ("prompt",), f"{path}: {where}: ")
    text, n, pooled = encode(sh["prompt"], f"{where}.prompt", path,
                             sh.get("prompt_embedding"),
                             sh.get("prompt_pooled"))
    latents, frames = None, sh.get("frames", config.scene.frames)
    if "condition" in sh:
      file = os.path.join(base, sh["condition"])
      x = read_media(file, f"{where}.condition", path)
      frames = sh.get("frames", len(x))
      if isinstance(frames, int) and frames > len(x):
        raise SceneFileError(f"{path}: {where}.frames={frames} but the "
                             f"condition {file!r} has {len(x)} frames")
      if isinstance(frames, int) and frames >= 1:
        x = x[:frames]          # a longer clip conditions with its start
      latents = _check_media(x, file.endswith(".npy"), config,
                             f"{where}.condition", file, path)
    if (not isinstance(frames, int) or isinstance(frames, bool)
        or not 1 <= frames <= config.scene.frames):
      raise SceneFileError(f"{path}: {where}.frames={frames!r} must be an "
                           f"int in [1, scene.frames={config.scene.frames}]")
    history = sh.get("history")
    if history is not None:
      if (not isinstance(history, list) or
          not all(isinstance(j, int) and 0 <= j < i for j in history)):
        raise SceneFileError(f"{path}: {where}.history={history!r} must list "
                             f"earlier shots (ints in 0..{i - 1})")
      history = tuple(history)
    out.append(Shot(text=text, text_len=n, num_frames=frames, pooled=pooled,
                    latents=latents,
                    t_c=(_t_c(sh["t_c"], f"{where}.t_c", path)
                         if "t_c" in sh else None),
                    seed=sh.get("seed", seed * 1000 + i), history=history))
    if not isinstance(out[-1].seed, int):
      raise SceneFileError(f"{path}: {where}.seed must be an int")
  return Scene(g_text, g_len, out, g_pooled), settings


def prompts(path: str) -> tuple[str, list[str]]:
  """(global prompt, shot prompts) of a scene file (for scoring)."""
  with open(path) as f:
    spec = json.load(f)
  return spec["global_prompt"], [s["prompt"] for s in spec["shots"]]
