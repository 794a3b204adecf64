"""The scene batch contract: keys, shapes, and checks that run before jit.

A batch is a dict of arrays at the config's static shapes
(N = scene.max_shots, G = N + 1 groups, L = scene.max_text_len):
  latents    float [B, N, F, H, W, C]  clean latents per shot slot
  num_frames int   [B, N]              valid latent frames (0 = padded shot);
                                       valid shots form a prefix of the slots
  text       int   [B, G, L]           token ids (model.text_mode='tokens'), or
             float [B, G, L, E]        embeddings (text_mode='embeddings');
                                       group 0 is the global prompt
  text_len   int   [B, G]              real text tokens per group
  pooled     float [B, G, P]           optional: pooled text (embeddings mode)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lct_jax.layout import SceneGeometry


def expected_shapes(config, batch_size: int) -> dict[str, tuple[int, ...]]:
  g = SceneGeometry.from_config(config)
  m = config.model
  B, N, G, L = batch_size, g.max_shots, g.num_groups, g.max_text_len
  shapes = {
      "latents": (B, N, g.frames, g.height, g.width, g.channels),
      "num_frames": (B, N),
      "text": (B, G, L) if m.text_mode == "tokens" else (B, G, L,
                                                         m.text_embed_dim),
      "text_len": (B, G),
  }
  if m.text_mode == "embeddings" and m.use_pooled_text:
    shapes["pooled"] = (B, G, m.pooled_dim)
  return shapes


def validate_batch(batch: dict, config) -> None:
  """Raises ValueError naming the key and the disagreeing value.

  Works on concrete arrays and on ShapeDtypeStructs (shapes only); value
  checks (lengths in range) run only on concrete numpy/jax arrays.
  """
  if not isinstance(batch, dict) or "latents" not in batch:
    raise ValueError(f"a batch is a dict with at least 'latents'; got "
                     f"{type(batch).__name__} with keys "
                     f"{sorted(batch) if isinstance(batch, dict) else '-'}")
  lat = batch["latents"]
  if len(lat.shape) != 6:
    raise ValueError(f"batch['latents'] must be [B, N, F, H, W, C], got shape "
                     f"{tuple(lat.shape)}")
  B, n = lat.shape[0], lat.shape[1]
  N = config.scene.max_shots
  if n > N:
    raise ValueError(f"batch['latents'] has {n} shots, more than "
                     f"scene.max_shots={N}")
  want = expected_shapes(config, B)
  unknown = set(batch) - set(want)
  if unknown:
    raise ValueError(f"unknown batch keys {sorted(unknown)}; expected "
                     f"{sorted(want)}")
  for key, shape in want.items():
    if key not in batch:
      raise ValueError(f"batch is missing {key!r} (shape {shape})")
    got = tuple(batch[key].shape)
    if got != shape:
      raise ValueError(f"batch[{key!r}] has shape {got}, but the config wants "
                       f"{shape} (scene.max_shots={N}, scene.max_text_len="
                       f"{config.scene.max_text_len}, grid=({config.scene.frames}"
                       f", {config.scene.height}, {config.scene.width}), "
                       f"channels={config.model.in_channels})")
  for key in ("num_frames", "text_len"):
    if not jnp.issubdtype(batch[key].dtype, jnp.integer):
      raise ValueError(f"batch[{key!r}] must be integer, got "
                       f"{batch[key].dtype}")
  text_is_int = jnp.issubdtype(batch["text"].dtype, jnp.integer)
  if text_is_int != (config.model.text_mode == "tokens"):
    raise ValueError(f"batch['text'] dtype {batch['text'].dtype} does not "
                     f"match model.text_mode={config.model.text_mode!r}")
  # Value checks on host (numpy) inputs only: never under tracing, and never
  # a device-to-host sync on arrays the input pipeline already placed.
  if not isinstance(batch["num_frames"], np.ndarray):
    return
  for key, field in (("num_frames", "frames"), ("text_len", "max_text_len")):
    x, hi = np.asarray(batch[key]), config.scene[field]
    if x.min() < 0 or x.max() > hi:
      raise ValueError(f"batch[{key!r}] must be in [0, scene.{field}={hi}], "
                       f"got range [{x.min()}, {x.max()}]")
    valid = x > 0
    if key == "num_frames" and np.any(valid[:, 1:] & ~valid[:, :-1]):
      raise ValueError("batch['num_frames']: valid shots must form a prefix "
                       "of the shot slots (a padded shot precedes a real one)")


def random_batch(config, seed: int, batch_size: int, *,
                 min_shots: int = 1) -> dict:
  """Random valid scenes at the config's shapes (tests and benchmarks).

  Shot counts, frame counts and text lengths vary per scene; one shot in
  three is an image (1 frame) when the grid has more than one frame.
  """
  rng = np.random.default_rng(seed)
  g = SceneGeometry.from_config(config)
  m = config.model
  B, N, G, L = batch_size, g.max_shots, g.num_groups, g.max_text_len
  num_shots = rng.integers(min_shots, N + 1, size=B)
  frames = rng.integers(1, g.frames // g.patch_t + 1, size=(B, N)) * g.patch_t
  frames = np.where(rng.random((B, N)) < 1 / 3, g.patch_t, frames)
  num_frames = np.where(np.arange(N)[None] < num_shots[:, None], frames, 0)
  text_len = rng.integers(1, L + 1, size=(B, G))
  text_len[:, 1:] = np.where(num_frames > 0, text_len[:, 1:], 0)
  batch = {
      "latents": rng.standard_normal(
          expected_shapes(config, B)["latents"]).astype(np.float32),
      "num_frames": num_frames.astype(np.int32),
      "text_len": text_len.astype(np.int32),
  }
  if m.text_mode == "tokens":
    tokens = rng.integers(2, m.vocab_size, size=(B, G, L))
    batch["text"] = np.where(np.arange(L) < text_len[..., None], tokens,
                             0).astype(np.int32)
  else:
    batch["text"] = rng.standard_normal(
        (B, G, L, m.text_embed_dim)).astype(np.float32)
    if m.use_pooled_text:
      batch["pooled"] = rng.standard_normal((B, G, m.pooled_dim)).astype(
          np.float32)
  return batch


def batch_dtypes(config) -> dict:
  """The dtype of every batch key, as the input pipeline delivers it."""
  text = np.int32 if config.model.text_mode == "tokens" else np.float32
  return {"latents": np.float32, "num_frames": np.int32, "text": text,
          "text_len": np.int32, "pooled": np.float32}


def abstract_batch(config, batch_size: int, sharding=None) -> dict:
  """The batch as ShapeDtypeStructs (for lowering; nothing allocated)."""
  dtypes = batch_dtypes(config)
  return {k: jax.ShapeDtypeStruct(shape, dtypes[k], sharding=sharding)
          for k, shape in expected_shapes(config, batch_size).items()}
