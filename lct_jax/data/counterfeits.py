"""Shots that look nothing like a synthetic scene's, for checking that the
metric says so (`estimators`, `consistency`): every metric is checked
against garbage before it judges anything.

Each maker takes a numpy Generator and a real shot's frames (uint8
[F, S, S, 3]; only its shape is used, except where noted) and returns
frames of the same shape and dtype.
"""
from __future__ import annotations

import numpy as np

from lct_jax.data import synthetic as syn


def gaussian_noise(rng, frames):
  """Mid-grey plus Gaussian noise (sigma 64), clipped."""
  x = 128 + 64 * rng.standard_normal(frames.shape)
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


def uniform_noise(rng, frames):
  return rng.integers(0, 256, frames.shape, dtype=np.uint8)


def blank(rng, frames):
  """One random flat colour, every pixel."""
  colour = rng.integers(0, 256, 3)
  return np.broadcast_to(colour, frames.shape).astype(np.uint8).copy()


def patch_shuffled(rng, frames, patch: int = 4):
  """The real shot with its patch x patch tiles permuted (one permutation
  for all frames): every colour statistic kept, the layout destroyed."""
  F, S, _, C = frames.shape
  n = S // patch
  tiles = frames.reshape(F, n, patch, n, patch, C).transpose(0, 1, 3, 2, 4, 5)
  tiles = tiles.reshape(F, n * n, patch, patch, C)[:, rng.permutation(n * n)]
  tiles = tiles.reshape(F, n, n, patch, patch, C).transpose(0, 1, 3, 2, 4, 5)
  return np.ascontiguousarray(tiles.reshape(frames.shape))


def sprite_free(rng, frames):
  """A perfect synthetic background (random colour, texture and tint), no
  sprite: the environment is recognisable, the identity is not."""
  F, S = frames.shape[:2]
  pick = lambda names: list(names)[rng.integers(len(names))]
  bg = np.asarray(syn.BACKGROUND_COLORS[pick(syn.BACKGROUND_COLORS)], float)
  frame = syn.texture_map(pick(syn.TEXTURES), S)[..., None] * bg
  frame = frame * np.asarray(syn.TINTS[pick(syn.TINTS)])
  frame = np.clip(np.round(frame), 0, 255).astype(np.uint8)
  return np.broadcast_to(frame, frames.shape).copy()


def pixel_noise(rng, frames, sigma: float):
  """The real shot plus Gaussian pixel noise (not garbage: the tolerance
  the estimators are calibrated for)."""
  x = frames + sigma * rng.standard_normal(frames.shape)
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


def soft_edges(frames, sigma_px: float):
  """The real shot under a Gaussian blur of sigma_px pixels per frame
  (separable, truncated at 4 sigma, edges reflected as scipy.ndimage
  does). Not garbage: at 0.5 px a person sees the same sprite, a shade
  softer, as a generator that does not draw hard pixel edges renders it;
  the estimators are calibrated to recognise it."""
  radius = max(1, int(4 * sigma_px + 0.5))
  offsets = np.arange(-radius, radius + 1)
  kernel = np.exp(-0.5 * (offsets / sigma_px) ** 2)
  kernel /= kernel.sum()
  x = frames.astype(np.float64)
  for axis in (1, 2):                      # rows, then columns
    pad = [(0, 0)] * x.ndim
    pad[axis] = (radius, radius)
    padded = np.pad(x, pad, mode="symmetric")
    x = sum(w * np.take(padded, np.arange(k, k + frames.shape[axis]),
                        axis=axis)
            for k, w in enumerate(kernel))
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


GARBAGE = {
    "gaussian_noise": gaussian_noise,
    "uniform_noise": uniform_noise,
    "blank": blank,
    "patch_shuffled": patch_shuffled,
    "sprite_free": sprite_free,
}
