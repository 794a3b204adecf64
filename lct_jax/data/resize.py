"""Resizing pixel frames onto a bucket's grid: scale to cover, centre crop.

Numpy only (it runs in grain worker processes). The filter is the
antialiased triangle (linear) filter of PIL's BILINEAR and
`jax.image.resize(method='linear', antialias=True)`: when shrinking, its
support widens with the scale so that every source pixel contributes and no
aliasing appears; when enlarging it is plain linear interpolation with
half-pixel centres. The test checks it against `jax.image.resize`.
"""
from __future__ import annotations

import numpy as np


def _weights(in_size: int, out_size: int) -> np.ndarray:
  """[out, in] row-normalised weights of the antialiased triangle filter."""
  scale = out_size / in_size
  support = max(1.0 / scale, 1.0)      # kernel radius in input pixels
  centers_out = (np.arange(out_size) + 0.5) / scale   # in input coordinates
  x_in = np.arange(in_size) + 0.5
  w = np.maximum(0.0, 1.0 - np.abs(x_in[None] - centers_out[:, None]) / support)
  return w / w.sum(1, keepdims=True)


def resize_float(x_FxHxWxC: np.ndarray, height: int, width: int
                 ) -> np.ndarray:
  """float32 [F, H, W, C] -> [F, height, width, C], separable filter."""
  _, h, w, _ = x_FxHxWxC.shape
  x = np.einsum("oh,fhwc->fowc", _weights(h, height).astype(np.float32),
                x_FxHxWxC.astype(np.float32))
  return np.einsum("pw,fowc->fopc", _weights(w, width).astype(np.float32), x)


def resize(frames_u8: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8 [F, H, W, 3] -> uint8 [F, height, width, 3] (aspect not kept)."""
  if frames_u8.shape[1:3] == (height, width):
    return frames_u8
  x = resize_float(frames_u8, height, width)
  return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def cover_crop(frames_u8: np.ndarray, height: int, width: int) -> np.ndarray:
  """Scale so that the frames cover height x width, then crop the centre.

  The crop is taken in the source before resizing (the largest centred box
  of the target's aspect ratio), so only one resize runs per frame.
  """
  _, h, w, _ = frames_u8.shape
  # Box of the target aspect inside the source: limited by height or width.
  if h * width >= w * height:                # source taller than the target
    box_h, box_w = max(1, round(w * height / width)), w
  else:
    box_h, box_w = h, max(1, round(h * width / height))
  top, left = (h - box_h) // 2, (w - box_w) // 2
  return resize(frames_u8[:, top:top + box_h, left:left + box_w],
                height, width)
