"""Causal auto-regressive generation with the KV cache (docs/design.md sections 5 and 9).

Three jitted pieces, each compiled once per (graphdef, shapes) whatever the
shot index or the history pool (slot and pool are traced values):
  init    the global group's K/V -> an empty `KVCache` of C shot slots;
  denoise Euler sampling of one new shot against the cache (only the new
          shot's tokens are computed at every step);
  encode  a finished (or given) shot, noised to its t_c with its fixed
          noise, run once at t_c; its K/V written into a cache slot.
With text CFG the cache holds 2B rows, [conditional ; unconditional text]
(history text is nulled in the unconditional rows too, as in training's
text dropout), and the guided velocity is v_u + s (v_c - v_u).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from lct_jax.diffusion import flow
from lct_jax.model import kv_cache
from lct_jax.sampling import euler


def _two(x):
  return None if x is None else jnp.concatenate([x, x], axis=0)


def _text(text, text_len, pooled, use_cfg):
  if use_cfg:
    return euler.with_uncond(text, text_len, pooled)
  return text, text_len, pooled


def shot_forward(model, cache, pool_BxC, z_BxFxHxWxC, t_B, text_BxL,
                 text_len_B, num_frames_B, pooled_BxP, guidance_B, *,
                 kv_out=False):
  """The model's forward of one new shot against the cache (a scene axis
  of one shot around it)."""
  one = lambda x: None if x is None else jnp.asarray(x)[:, None]
  out = model(one(z_BxFxHxWxC), one(t_B), one(text_BxL), one(text_len_B),
              one(num_frames_B), one(pooled_BxP), guidance_B, cache=cache,
              pool_BxC=pool_BxC, kv_out=kv_out)
  if kv_out:
    return out[0][:, 0], out[1]
  return out[:, 0]


def init(model, text_BxL, text_len_B, pooled_BxP, *, capacity: int,
         use_cfg: bool, guidance_B=None) -> kv_cache.KVCache:
  text, text_len, pooled = _text(text_BxL, text_len_B, pooled_BxP, use_cfg)
  guidance = _two(guidance_B) if use_cfg else guidance_B
  return kv_cache.init_cache(model, text, text_len, pooled,
                             capacity=capacity, guidance_B=guidance)


def denoise(model, cache, pool_BxC, text_BxL, text_len_B, pooled_BxP,
            num_frames_B, eps_BxFxHxWxC, ts, cfg_scale, churn_Bx2=None,
            eta=0.0, *, use_cfg: bool, guidance_B=None):
  """One new shot from noise `eps` to t = 0 against the cache (with
  `churn_Bx2`, the stochastic sampler of strength `eta`; joint.generate)."""
  B = eps_BxFxHxWxC.shape[0]
  text, text_len, pooled = _text(text_BxL, text_len_B, pooled_BxP, use_cfg)
  if use_cfg:
    pool_BxC, num_frames_B, guidance_B = map(
        _two, (pool_BxC, num_frames_B, guidance_B))

  def velocity(z, t):
    z = _two(z) if use_cfg else z
    t_B = jnp.full((z.shape[0],), t, jnp.float32)
    v = shot_forward(model, cache, pool_BxC, z, t_B, text, text_len,
                     num_frames_B, pooled, guidance_B)
    return euler.guide(v[:B], v[B:], cfg_scale) if use_cfg else v

  noise_fn = None if churn_Bx2 is None else (
      lambda i: euler.churn_noise(churn_Bx2, i, eps_BxFxHxWxC.shape[1:],
                                  eps_BxFxHxWxC.dtype))
  z = euler.sample(velocity, eps_BxFxHxWxC, ts, eta=eta, noise_fn=noise_fn)
  frames = flow.frame_mask(num_frames_B[:B, None], z.shape[1])[:, 0]
  return jnp.where(frames[..., None, None, None], z, jnp.zeros_like(z))


def encode(model, cache, slot, pool_BxC, latents_BxFxHxWxC, eps_BxFxHxWxC,
           t_c_B, text_BxL, text_len_B, pooled_BxP, num_frames_B, *,
           use_cfg: bool, guidance_B=None) -> kv_cache.KVCache:
  """Noises a shot to t_c with its fixed noise, runs it once against its
  history pool, and writes its K/V into cache slot `slot`."""
  z = flow.add_noise(latents_BxFxHxWxC, eps_BxFxHxWxC, t_c_B)
  text, text_len, pooled = _text(text_BxL, text_len_B, pooled_BxP, use_cfg)
  if use_cfg:
    z, t_c_B, pool_BxC, num_frames_B, guidance_B = map(
        _two, (z, t_c_B, pool_BxC, num_frames_B, guidance_B))
  _, kv = shot_forward(model, cache, pool_BxC, z, t_c_B, text, text_len,
                       num_frames_B, pooled, guidance_B, kv_out=True)
  return cache.write(slot, kv, text_len, num_frames_B)


def _checked(fn, graphdef):
  """`fn(params, cache, ...)` that first checks, eagerly, that the cache was
  built by this model: another model's cache is a clear error naming the
  difference, before any tracing (`KVCache.check_model`)."""

  def call(params, cache, *args, **kwargs):
    cache.check_model(nnx.merge(graphdef, params))
    return fn(params, cache, *args, **kwargs)

  call.lower = fn.lower       # aot.py compiles the jitted function itself
  return call


@functools.lru_cache(maxsize=None)
def jitted(graphdef):
  """(init, denoise, encode) jitted as functions of the parameters; denoise
  and encode check the cache's model before entering jit."""
  merge = lambda p: nnx.merge(graphdef, p)
  init_fn = jax.jit(
      lambda p, *a, capacity, use_cfg, guidance_B=None: init(
          merge(p), *a, capacity=capacity, use_cfg=use_cfg,
          guidance_B=guidance_B),
      static_argnames=("capacity", "use_cfg"))

  def cached_shot(f):
    return _checked(jax.jit(
        lambda p, *a, use_cfg, guidance_B=None: f(
            merge(p), *a, use_cfg=use_cfg, guidance_B=guidance_B),
        static_argnames=("use_cfg",)), graphdef)

  return init_fn, cached_shot(denoise), cached_shot(encode)
