"""3D rotary position embedding with interleaved pairs (HunyuanVideo style).

The head dimension is split into (t, h, w) bands of sizes `axes_dim`; band a
rotates by position[a] * freq with freq_k = theta ** (-2k / d_a). Pairs are
interleaved, as in diffusers:
  out[2k]   = x[2k]   cos - x[2k+1] sin
  out[2k+1] = x[2k+1] cos + x[2k]   sin
Tables are computed in float32 whatever the compute dtype, as diffusers does.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def validate_axes(axes_dim: Sequence[int], head_dim: int) -> None:
  if len(axes_dim) != 3:
    raise ValueError(f"rope_axes_dim must have 3 entries (t, h, w), "
                     f"got {tuple(axes_dim)}")
  if any(d <= 0 or d % 2 for d in axes_dim):
    raise ValueError(f"rope_axes_dim entries must be positive and even, "
                     f"got {tuple(axes_dim)}")
  if sum(axes_dim) != head_dim:
    raise ValueError(f"rope_axes_dim={tuple(axes_dim)} sums to "
                     f"{sum(axes_dim)}, but head_dim is {head_dim}")


def frequencies(axes_dim: Sequence[int], theta: float
                ) -> tuple[np.ndarray, np.ndarray]:
  """Per rotation pair: (frequency float32 [D/2], axis index int32 [D/2])."""
  freqs, axes = [], []
  for axis, d in enumerate(axes_dim):
    exponent = np.arange(0, d, 2, dtype=np.float32)[: d // 2] / np.float32(d)
    # theta ** exponent correctly rounded to float32 (computed in float64),
    # then a float32 reciprocal: bit-identical to torch's float32 table in
    # diffusers (numpy's float32 power is off by an ulp in some entries).
    power = (np.float64(theta) ** exponent.astype(np.float64)).astype(
        np.float32)
    freqs.append(np.float32(1.0) / power)
    axes.append(np.full(d // 2, axis, np.int32))
  return (np.concatenate(freqs).astype(np.float32), np.concatenate(axes))


def rope_tables(pos_BxSx3: jax.Array, axes_dim: Sequence[int], theta: float
                ) -> tuple[jax.Array, jax.Array]:
  """Integer positions -> (cos, sin), each float32 [B, S, D/2]."""
  freq_K, axis_K = frequencies(axes_dim, theta)
  angle_BxSxK = pos_BxSx3[..., axis_K].astype(jnp.float32) * freq_K
  return jnp.cos(angle_BxSxK), jnp.sin(angle_BxSxK)


def apply_rope(x_BxSxHxD: jax.Array, cos_BxSxK: jax.Array,
               sin_BxSxK: jax.Array) -> jax.Array:
  """Rotates interleaved pairs of every head; math in float32.

  Any leading token dims work ([B, V, T, H, D] with tables [B, V, T, K]).
  """
  dtype = x_BxSxHxD.dtype
  x = x_BxSxHxD.astype(jnp.float32)
  # An explicit K, not -1: a stream may have no tokens (zero size).
  x = x.reshape(*x.shape[:-1], x.shape[-1] // 2, 2)   # [B, S, H, K, 2]
  x_even, x_odd = x[..., 0], x[..., 1]
  cos, sin = cos_BxSxK[..., None, :], sin_BxSxK[..., None, :]
  out = jnp.stack([x_even * cos - x_odd * sin,
                   x_odd * cos + x_even * sin], axis=-1)
  return out.reshape(x_BxSxHxD.shape).astype(dtype)
