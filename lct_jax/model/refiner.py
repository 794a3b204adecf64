"""HunyuanVideo's text token refiner, run on each group's text separately.

diffusers' `HunyuanVideoTokenRefiner`: the raw text embeddings of a prompt go
through `proj_in` and a few small self-attention blocks conditioned on
c = timestep_embed(t) + text_embed(masked mean of the raw embeddings). The
blocks are pre-LN (affine LayerNorm), plain attention (no QK norm, no RoPE),
a SiLU MLP, and gates from `norm_out.linear` (gate_attn, gate_mlp).

In a scene every group (global prompt and each shot) refines its own prompt
with its own timestep t_g, so a one-group scene is exactly diffusers'
refiner. Parameter names mirror diffusers under `context_embedder`:
`time_text_embed.{timestep_embedder,text_embedder}.linear_{1,2}` and
`token_refiner.refiner_blocks` (stacked over layers here, one scan).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lct_jax import attention
from lct_jax.model.layers import (AdaLNZero, FeedForward, LN_EPS, linear,
                                  normalize32, scan_stack, stack)

# diffusers builds the refiner with its own default MLP ratio, whatever the
# model's `mlp_ratio` is.
REFINER_MLP_RATIO = 4.0


class AffineLayerNorm(nnx.Module):
  """LayerNorm with diffusers' `weight` and `bias` names; stats in float32."""

  def __init__(self, dim: int, *, eps: float = LN_EPS):
    self.eps = eps
    self.weight = nnx.Param(jnp.ones((dim,), jnp.float32),
                            out_sharding=(None,), eager_sharding=False)
    self.bias = nnx.Param(jnp.zeros((dim,), jnp.float32),
                          out_sharding=(None,), eager_sharding=False)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = normalize32(x, self.eps)
    return (y * self.weight[...] + self.bias[...]).astype(x.dtype)


class RefinerAttention(nnx.Module):
  """diffusers' plain `Attention`: to_q/k/v (bias), `to_out.0`."""

  def __init__(self, width: int, num_heads: int, head_dim: int, *,
               rngs: nnx.Rngs):
    self.num_heads, self.head_dim = num_heads, head_dim
    inner = num_heads * head_dim
    self.to_q = linear(width, inner, ("embed", "heads"), rngs=rngs)
    self.to_k = linear(width, inner, ("embed", "heads"), rngs=rngs)
    self.to_v = linear(width, inner, ("embed", "heads"), rngs=rngs)
    self.to_out_0 = linear(inner, width, ("heads", "embed"), rngs=rngs)

  def __call__(self, x_NxLxD: jax.Array, mask: attention.GroupMask):
    heads = lambda z: z.reshape(*z.shape[:-1], self.num_heads, self.head_dim)
    q, k, v = (heads(f(x_NxLxD)) for f in (self.to_q, self.to_k, self.to_v))
    # Prompts are short (HunyuanVideo: 256 tokens): dense attention.
    o = attention.attend(q, k, v, mask, impl="dense")
    return self.to_out_0(o.reshape(*x_NxLxD.shape[:-1], -1))


class RefinerBlock(nnx.Module):
  """`HunyuanVideoIndividualTokenRefinerBlock`: gated pre-LN block."""

  def __init__(self, width: int, num_heads: int, head_dim: int, *,
               rngs: nnx.Rngs, zero_init: bool = True):
    self.norm1 = AffineLayerNorm(width)
    self.attn = RefinerAttention(width, num_heads, head_dim, rngs=rngs)
    self.norm2 = AffineLayerNorm(width)
    self.ff = FeedForward(width, int(width * REFINER_MLP_RATIO), rngs=rngs,
                          activation=jax.nn.silu)
    # `norm_out.linear`: c -> (gate_attn, gate_mlp) (HunyuanVideoAdaNorm).
    self.norm_out = AdaLNZero(width, rngs=rngs, zero=zero_init, chunks=2)

  def __call__(self, x_NxLxD, silu_c_NxD, mask: attention.GroupMask):
    gate_attn, gate_mlp = self.norm_out(silu_c_NxD)
    x = x_NxLxD + self.attn(self.norm1(x_NxLxD), mask) * gate_attn[:, None]
    return x + self.ff(self.norm2(x)) * gate_mlp[:, None]


class TokenRefiner(nnx.Module):
  """Holds the stacked refiner blocks (`token_refiner.refiner_blocks`)."""

  def __init__(self, m, *, rngs: nnx.Rngs):
    self.refiner_blocks = stack(
        m.num_refiner_layers, lambda rngs: RefinerBlock(
            m.width, m.num_heads, m.head_dim, rngs=rngs,
            zero_init=m.zero_init), rngs)

  def __call__(self, x_NxLxD: jax.Array, c_NxD: jax.Array,
               valid_NxL: jax.Array) -> jax.Array:
    """Refines N independent prompts of L slots; `valid_NxL` marks tokens."""
    L = x_NxLxD.shape[1]
    # diffusers lets every query see key 0 besides the valid keys (so an
    # empty prompt gives no NaN). For real tokens (padding at the end) this
    # is exactly the valid-key mask; padded tokens' outputs are masked out
    # as keys downstream, so their values do not matter.
    kv_valid_NxL = valid_NxL | (jnp.arange(L) == 0)[None]
    zeros_L = np.zeros(L, np.int32)
    mask = attention.GroupMask(q_group=zeros_L, kv_group=zeros_L,
                               kv_valid=kv_valid_NxL, causal=False)
    silu_c = jax.nn.silu(c_NxD)
    x, _ = scan_stack(self.refiner_blocks,
                      lambda block, x, _: (block(x, silu_c, mask), None),
                      x_NxLxD)
    return x


def masked_mean(x_xLxE: jax.Array, valid_xL: jax.Array) -> jax.Array:
  """Mean over the valid tokens (axis -2; diffusers' refiner pooling), in
  float32.

  diffusers divides by the count and gives NaN for an empty prompt; here an
  empty prompt pools to 0.
  """
  w = valid_xL.astype(jnp.float32)[..., None]
  total = jnp.sum(x_xLxE.astype(jnp.float32) * w, axis=-2)
  return (total / jnp.maximum(jnp.sum(w, axis=-2), 1.0)).astype(x_xLxE.dtype)
