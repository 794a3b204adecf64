"""Euler ODE sampling on the rectified-flow velocity (docs/design.md section 9).

The model predicts v = eps - z_0 (`lct_jax.diffusion.flow`), so the ODE
dz/dt = v runs from pure noise at t = 1 to data at t = 0. Euler steps on a
grid t_0 = 1 > t_1 > ... > t_S = 0:
  z_{i+1} = z_i + (t_{i+1} - t_i) v(z_i, t_i)
(one step from t = 1 gives z - v, the model's own estimate of z_0). The grid
is uniform in t and then shifted as in training (`flow.shift_timesteps`,
SD3's shift; s > 1 spends more steps at high noise).

With `eta` > 0 the sampler is stochastic (`stochastic_step`): each step
re-draws part of the noise, as DDPM's ancestral sampler does (eta = 1 is
DDPM's posterior; eta = 0 is the Euler step above, written another way).
The fresh noise lets a model that denoises nearly clean images well repair
what its high-noise steps got wrong (docs/design.md section 9).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from lct_jax.diffusion import augment


def timesteps(steps: int, shift: float = 1.0) -> np.ndarray:
  """float32 [steps + 1] from 1 down to 0 (both ends exact)."""
  if not isinstance(steps, (int, np.integer)) or steps < 1:
    raise ValueError(f"steps must be a positive int, got {steps!r}")
  if shift <= 0:
    raise ValueError(f"shift must be > 0, got {shift}")
  t = np.linspace(1.0, 0.0, steps + 1, dtype=np.float64)
  t = shift * t / (1.0 + (shift - 1.0) * t) if shift != 1.0 else t
  return t.astype(np.float32)


# Progress over Euler steps from inside jitted code: every step calls
# `_tick` on the host (jax.debug.callback), which forwards to the hooks that
# `progress_hook` registers (sample.py's progress bar). Compiled code does not
# depend on whether a hook is registered, so it is compiled once either way.
_HOOKS: list = []


def _tick():
  for hook in _HOOKS:
    hook()


class progress_hook:  # pylint: disable=invalid-name
  """Context manager: `fn()` is called after every Euler step run inside."""

  def __init__(self, fn):
    self.fn = fn

  def __enter__(self):
    _HOOKS.append(self.fn)
    return self

  def __exit__(self, *exc):
    _HOOKS.remove(self.fn)


def posterior_noise_std(t, s, eta=1.0):
  """The fresh-noise std c of a step t -> s < t, times eta, at most s.

  For z_t = (1 - t) x + t eps, DDPM's posterior q(z_s | z_t, x) has std
  s sqrt(1 - r^2), r = (1 - t) s / ((1 - s) t) (alpha_t sigma_s /
  (alpha_s sigma_t)); eta scales it (eta = 0: deterministic).
  """
  r = (1.0 - t) * s / jnp.maximum((1.0 - s) * t, 1e-12)
  return jnp.minimum(s, eta * s * jnp.sqrt(jnp.maximum(1.0 - r * r, 0.0)))


def stochastic_step(z, v, t, s, eta, xi):
  """z_s = (1 - s) x_hat + sqrt(s^2 - c^2) eps_hat + c xi, from the
  velocity's estimates x_hat = z - t v and eps_hat = z + (1 - t) v
  (DDIM's generalised step; c = `posterior_noise_std`). At s = 0: x_hat."""
  x_hat, eps_hat = z - t * v, z + (1.0 - t) * v
  c = posterior_noise_std(t, s, eta)
  return ((1.0 - s) * x_hat + jnp.sqrt(jnp.maximum(s * s - c * c, 0.0))
          * eps_hat + c * xi)


def churn_keys(seed: int) -> np.ndarray:
  """uint32 [2]: the key of a shot's stochastic-sampler noise, a function
  of its seed alone (like its starting noise: `noise_like_shot`)."""
  return np.asarray(jax.random.key_data(
      jax.random.fold_in(jax.random.key(seed), 2)))


def churn_noise(keys_Kx2: jax.Array, step, shot_shape, dtype) -> jax.Array:
  """[*K, *shot_shape]: step `step`'s fresh noise of each shot key."""
  flat = keys_Kx2.reshape(-1, 2)
  draw = lambda k: jax.random.normal(
      jax.random.fold_in(jax.random.wrap_key_data(k), step), shot_shape, dtype)
  return jax.vmap(draw)(flat).reshape(keys_Kx2.shape[:-1] + tuple(shot_shape))


def sample(velocity_fn: Callable[[jax.Array, jax.Array], jax.Array],
           z_init: jax.Array, ts: jax.Array, *, eta=0.0,
           noise_fn: Callable[[jax.Array], jax.Array] | None = None
           ) -> jax.Array:
  """Integrates dz/dt = velocity_fn(z, t) along `ts` (a lax.scan: one
  compiled body whatever the number of steps). With `noise_fn` (step index
  -> fresh noise like z), the stochastic sampler of strength `eta`."""
  ts = jnp.asarray(ts, jnp.float32)

  def step(z, xs):
    t, t_next, i = xs
    v = velocity_fn(z, t).astype(z.dtype)
    if noise_fn is None:
      z = z + (t_next - t).astype(z.dtype) * v
    else:
      z = stochastic_step(z, v, t, t_next, eta, noise_fn(i)).astype(z.dtype)
    jax.debug.callback(_tick)
    return z, None

  steps = jnp.arange(ts.size - 1)
  z, _ = jax.lax.scan(step, z_init, (ts[:-1], ts[1:], steps))
  return z


def guide(v_cond: jax.Array, v_uncond: jax.Array, scale) -> jax.Array:
  """Classifier-free guidance: v_u + s (v_c - v_u); s = 1 is v_c."""
  return v_uncond + scale * (v_cond - v_uncond)


def null_text(text: jax.Array, text_len_BxG: jax.Array,
              pooled: jax.Array | None = None):
  """The unconditional text of CFG: what training's text dropout feeds
  (`diffusion.augment.drop_text`): NULL tokens at the real positions (the
  lengths, hence the RoPE positions, are kept) or zero embeddings."""
  if jnp.issubdtype(text.dtype, jnp.integer):
    valid = jnp.arange(text.shape[-1]) < text_len_BxG[..., None]
    text = jnp.where(valid, augment.NULL_TOKEN,
                     augment.PAD_TOKEN).astype(text.dtype)
  else:
    text = jnp.zeros_like(text)
  return text, (None if pooled is None else jnp.zeros_like(pooled))


def with_uncond(text, text_len, pooled=None):
  """Doubles a batch along axis 0: [conditional ; unconditional text]."""
  n_text, n_pooled = null_text(text, text_len, pooled)
  cat = lambda a, b: jnp.concatenate([a, b], axis=0)
  return (cat(text, n_text), cat(text_len, text_len),
          None if pooled is None else cat(pooled, n_pooled))


def noise_like_shot(key: jax.Array, shot_index, shape, dtype=jnp.float32):
  """The fixed noise of scene shot `shot_index`: fold_in(key, index), so a
  shot draws the same noise whichever slot or mode it is generated in."""
  return jax.random.normal(jax.random.fold_in(key, shot_index), shape, dtype)

