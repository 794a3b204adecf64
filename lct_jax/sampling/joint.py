"""Joint generation with condition shots (docs/design.md section 9).

All shots being generated share t; any shot slots may be *conditions*: given
latents noised to their own t_c with fixed noise (t_c = 0: clean), fed at
t_c at every step, never updated, and returned exactly as given (their
outputs are discarded). One mechanism covers visual-conditioned generation,
narrative continuation (a given video as shot 1), zero-shot composition
(identity and environment images as 1-frame condition shots) and
interpolation (first and last shots fixed); with history shots as
conditions it is also one step of bidirectional auto-regressive generation
and the no-cache reference of causal generation.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from lct_jax.diffusion import flow
from lct_jax.sampling import euler


def scene_velocity(model, z_BxN, t_BxN, batch: dict, cfg_scale, *,
                   use_cfg: bool, guidance_B=None):
  """The model's velocity for a scene, with text CFG when `use_cfg`.

  The unconditional branch nulls all text of the scene (what training's
  text dropout shows the model) and keeps every visual input.
  """
  args = (batch["text"], batch["text_len"], batch["num_frames"])
  pooled = batch.get("pooled")
  if not use_cfg:
    return model(z_BxN, t_BxN, *args, pooled_BxGxP=pooled,
                 guidance_B=guidance_B)
  B = z_BxN.shape[0]
  text, text_len, pooled2 = euler.with_uncond(batch["text"],
                                              batch["text_len"], pooled)
  two = lambda x: None if x is None else jnp.concatenate([x, x], axis=0)
  v = model(two(z_BxN), two(t_BxN), text, text_len,
            two(batch["num_frames"]), pooled_BxGxP=pooled2,
            guidance_B=two(guidance_B))
  return euler.guide(v[:B], v[B:], cfg_scale)


def _per_shot(x_BxN, ndim):
  return x_BxN.reshape(x_BxN.shape + (1,) * (ndim - x_BxN.ndim))


def generate(model, batch: dict, cond_BxN, t_cond_BxN, eps_gen, eps_cond,
             ts, cfg_scale=1.0, *, use_cfg: bool = False, guidance_B=None,
             churn_BxNx2=None, eta=0.0):
  """Euler sampling of every non-condition shot slot; -> latents like
  batch['latents'] (conditions bit-identical, padded frames zero).

  Args:
    model: an MMDiT.
    batch: a scene batch (`lct_jax.batch`); 'latents' holds the condition
      shots' clean latents (anything elsewhere).
    cond_BxN: bool, which shot slots are conditions.
    t_cond_BxN: the conditions' timesteps in [0, 1] (0 = clean).
    eps_gen: the starting noise of the generated shots (latents' shape).
    eps_cond: the fixed noise of the conditions (latents' shape).
    ts: the time grid, [steps + 1] from 1 to 0 (`euler.timesteps`).
    cfg_scale: text guidance scale (used when `use_cfg`).
    use_cfg: run the unconditional branch (static).
    churn_BxNx2: each shot's stochastic-sampler key (`euler.churn_keys`);
      None: the deterministic Euler sampler.
    eta: the stochastic sampler's strength (`euler.stochastic_step`).
  """
  latents = batch["latents"]
  nd = latents.ndim
  cond = _per_shot(jnp.asarray(cond_BxN, bool), nd)
  t_cond_BxN = jnp.asarray(t_cond_BxN, jnp.float32)
  z_cond = flow.add_noise(latents, eps_cond.astype(latents.dtype),
                          t_cond_BxN)

  def velocity(z, t):
    z_in = jnp.where(cond, z_cond, z)
    t_in = jnp.where(cond_BxN, t_cond_BxN, t)
    return scene_velocity(model, z_in, t_in, batch, cfg_scale,
                          use_cfg=use_cfg, guidance_B=guidance_B)

  noise_fn = None if churn_BxNx2 is None else (
      lambda i: euler.churn_noise(churn_BxNx2, i, latents.shape[2:],
                                  latents.dtype))
  z = euler.sample(velocity, eps_gen.astype(latents.dtype), ts, eta=eta,
                   noise_fn=noise_fn)
  out = jnp.where(cond, latents, z)
  frames = flow.frame_mask(batch["num_frames"], latents.shape[2])
  return jnp.where(frames[..., None, None, None] | cond, out,
                   jnp.zeros_like(out))


@functools.lru_cache(maxsize=None)
def jitted(graphdef):
  """generate() as one jitted function of the parameters (per graphdef)."""
  def fn(params, batch, cond, t_cond, eps_gen, eps_cond, ts, cfg_scale,
         guidance_B, use_cfg, churn=None, eta=0.0):
    return generate(nnx.merge(graphdef, params), batch, cond, t_cond,
                    eps_gen, eps_cond, ts, cfg_scale, use_cfg=use_cfg,
                    guidance_B=guidance_B, churn_BxNx2=churn, eta=eta)
  return jax.jit(fn, static_argnames=("use_cfg",))
