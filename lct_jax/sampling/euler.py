"""Euler ODE sampling on the rectified-flow velocity (docs/design.md section 9).

The model predicts v = eps - z_0 (`lct_jax.diffusion.flow`), so the ODE
dz/dt = v runs from pure noise at t = 1 to data at t = 0. Euler steps on a
grid t_0 = 1 > t_1 > ... > t_S = 0:
  z_{i+1} = z_i + (t_{i+1} - t_i) v(z_i, t_i)
(one step from t = 1 gives z - v, the model's own estimate of z_0). The grid
is uniform in t and then shifted as in training (`flow.shift_timesteps`,
SD3's shift; s > 1 spends more steps at high noise).
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


def sample(velocity_fn: Callable[[jax.Array, jax.Array], jax.Array],
           z_init: jax.Array, ts: jax.Array) -> jax.Array:
  """Integrates dz/dt = velocity_fn(z, t) along `ts` (a lax.scan: one
  compiled body whatever the number of steps)."""
  ts = jnp.asarray(ts, jnp.float32)

  def step(z, t_pair):
    t, t_next = t_pair
    v = velocity_fn(z, t)
    z = z + (t_next - t).astype(z.dtype) * v.astype(z.dtype)
    jax.debug.callback(_tick)
    return z, None

  z, _ = jax.lax.scan(step, z_init, (ts[:-1], ts[1:]))
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

