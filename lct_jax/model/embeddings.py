"""Input embeddings: patches, timesteps, pooled text, text tokens."""
from __future__ import annotations

import math

import einops
import jax
import jax.numpy as jnp
from flax import nnx

from lct_jax.model.layers import linear

SINUSOID_DIM = 256


def timestep_sinusoid(t: jax.Array, dim: int = SINUSOID_DIM,
                      max_period: float = 10000.0) -> jax.Array:
  """diffusers `get_timestep_embedding(flip_sin_to_cos=True, shift=0)`.

  [...] -> [..., dim] as [cos | sin], in float32 whatever the compute dtype.
  """
  half = dim // 2
  exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half
  angle = t.astype(jnp.float32)[..., None] * jnp.exp(exponent)
  return jnp.concatenate([jnp.cos(angle), jnp.sin(angle)], axis=-1)


class MLPEmbedder(nnx.Module):
  """linear_1 -> SiLU -> linear_2 (TimestepEmbedding, PixArt text proj)."""

  def __init__(self, d_in: int, width: int, *, rngs: nnx.Rngs):
    self.linear_1 = linear(d_in, width, (None, "embed"), rngs=rngs)
    self.linear_2 = linear(width, width, ("embed", None), rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.linear_2(jax.nn.silu(self.linear_1(x)))


class PatchEmbed(nnx.Module):
  """3D patchify + linear (= diffusers' strided Conv3d `x_embedder.proj`).

  Patch features are ordered (c, pt, p, p), the Conv3d weight layout, so the
  conversion is a reshape and a transpose.
  """

  def __init__(self, patch_dim: int, width: int, *, rngs: nnx.Rngs):
    self.proj = linear(patch_dim, width, (None, "embed"), rngs=rngs)

  def __call__(self, x_BxNxFxHxWxC: jax.Array, pt: int, p: int) -> jax.Array:
    patches = einops.rearrange(
        x_BxNxFxHxWxC,
        "b n (f pt) (h ph) (w pw) c -> b n (f h w) (c pt ph pw)",
        pt=pt, ph=p, pw=p)
    return self.proj(patches)                       # [B, N, T, D]


def unpatchify(x_BxNxTxP: jax.Array, grid: tuple[int, int, int], pt: int,
               p: int) -> jax.Array:
  """Inverse of the patch layout: [B, N, T, (c pt p p)] -> [B, N, F, H, W, C]."""
  f, h, w = grid
  return einops.rearrange(
      x_BxNxTxP, "b n (f h w) (c pt ph pw) -> b n (f pt) (h ph) (w pw) c",
      f=f, h=h, w=w, pt=pt, ph=p, pw=p)


class TokenEmbed(nnx.Module):
  """A small learned vocabulary (the synthetic data's word tokens)."""

  def __init__(self, vocab_size: int, dim: int, *, rngs: nnx.Rngs):
    self.embedding = nnx.Param(
        jax.random.normal(rngs.params(), (vocab_size, dim)) * 0.02,
        out_sharding=("vocab", None), eager_sharding=False)

  def __call__(self, tokens: jax.Array) -> jax.Array:
    return jnp.take(self.embedding[...], tokens, axis=0)
