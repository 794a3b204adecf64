"""Rectified flow with independent per-shot timesteps (docs/design.md section 8).

  z_t = (1 - t) z_0 + t eps,   t in [0, 1], t = 1 is pure noise
  target velocity v = eps - z_0
Loss: mean squared error over each shot's valid video elements, then the mean
over valid shots, each shot weighted equally whatever its length. The global
group carries no loss.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def shift_timesteps(t: jax.Array, shift: float) -> jax.Array:
  """SD3 shift: t' = s t / (1 + (s - 1) t); s > 1 moves mass to high noise."""
  if shift == 1.0:
    return t
  return shift * t / (1.0 + (shift - 1.0) * t)


def resolution_shift(num_tokens: int, base_tokens: int) -> float:
  """SD3's resolution-dependent shift: sqrt(tokens / tokens of the base)."""
  return float((num_tokens / base_tokens) ** 0.5)


def sample_timesteps(key: jax.Array, shape, *, mean: float = 0.0,
                     std: float = 1.0, shift: float = 1.0,
                     low_fraction: float = 0.0, low_mean: float = 0.0
                     ) -> jax.Array:
  """Logit-normal t = sigmoid(N(mean, std)), drawn independently per entry.

  With `low_fraction` > 0, each entry instead draws its logit's mean as
  `low_mean` with that probability: a mixture of two logit-normals. A
  pixel-space model trained only at high noise (mean > 0, where the prompt
  decides the picture) never learns to keep a nearly clean image; the
  second component teaches that, and a stochastic sampler then uses it to
  repair what the high-noise steps got wrong (docs/design.md section 8).
  """
  if low_fraction > 0:             # its own key: without it, draws as before
    low = jax.random.bernoulli(jax.random.fold_in(key, 1), low_fraction,
                               shape)
    mean = jnp.where(low, low_mean, mean)
  u = mean + std * jax.random.normal(key, shape, jnp.float32)
  return shift_timesteps(jax.nn.sigmoid(u), shift)


def _per_shot(t_BxN: jax.Array, ndim: int) -> jax.Array:
  return t_BxN.reshape(t_BxN.shape + (1,) * (ndim - t_BxN.ndim))


def add_noise(z0_BxNx: jax.Array, eps_BxNx: jax.Array, t_BxN: jax.Array
              ) -> jax.Array:
  t = _per_shot(t_BxN, z0_BxNx.ndim).astype(z0_BxNx.dtype)
  return (1.0 - t) * z0_BxNx + t * eps_BxNx


def velocity_target(z0: jax.Array, eps: jax.Array) -> jax.Array:
  return eps - z0


def frame_mask(num_frames_BxN: jax.Array, frames: int) -> jax.Array:
  """bool [B, N, F]: which latent frames of each shot slot are real."""
  return jnp.arange(frames)[None, None, :] < num_frames_BxN[:, :, None]


def per_shot_mse(v_pred_BxNxFxHxWxC: jax.Array, target_BxNxFxHxWxC: jax.Array,
                 num_frames_BxN: jax.Array) -> jax.Array:
  """Mean squared error over each shot's valid frames: float32 [B, N].

  Shots with no valid frame (padding) get 0.
  """
  err = jnp.square(v_pred_BxNxFxHxWxC.astype(jnp.float32)
                   - target_BxNxFxHxWxC.astype(jnp.float32))
  err_BxNxF = jnp.sum(err, axis=(3, 4, 5))
  fmask = frame_mask(num_frames_BxN, err.shape[2])
  elems_per_frame = err.shape[3] * err.shape[4] * err.shape[5]
  total_BxN = jnp.sum(jnp.where(fmask, err_BxNxF, 0.0), axis=2)
  count_BxN = num_frames_BxN.astype(jnp.float32) * elems_per_frame
  return jnp.where(num_frames_BxN > 0, total_BxN / jnp.maximum(count_BxN, 1.0),
                   0.0)


def shot_loss_sum(v_pred, target, num_frames_BxN) -> tuple[jax.Array, jax.Array]:
  """(sum over valid shots of their MSE, number of valid shots).

  Kept as a sum and a count so that gradient accumulation over microbatches
  divides once by the whole batch's shot count: exactly the full-batch loss.
  """
  mse_BxN = per_shot_mse(v_pred, target, num_frames_BxN)
  valid = num_frames_BxN > 0
  return jnp.sum(jnp.where(valid, mse_BxN, 0.0)), jnp.sum(valid).astype(
      jnp.float32)
