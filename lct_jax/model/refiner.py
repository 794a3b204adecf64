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
from lct_jax.model.layers import FeedForward, LN_EPS, linear

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
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, -1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), -1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
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


class RefinerGates(nnx.Module):
  """`norm_out.linear`: c -> (gate_attn, gate_mlp) (HunyuanVideoAdaNorm)."""

  def __init__(self, width: int, *, rngs: nnx.Rngs, zero: bool):
    self.linear = linear(width, 2 * width, ("embed", "modulation"),
                         rngs=rngs, zero=zero)


class RefinerBlock(nnx.Module):
  """`HunyuanVideoIndividualTokenRefinerBlock`: gated pre-LN block."""

  def __init__(self, width: int, num_heads: int, head_dim: int, *,
               rngs: nnx.Rngs, zero_init: bool = True):
    self.norm1 = AffineLayerNorm(width)
    self.attn = RefinerAttention(width, num_heads, head_dim, rngs=rngs)
    self.norm2 = AffineLayerNorm(width)
    self.ff = FeedForward(width, int(width * REFINER_MLP_RATIO), rngs=rngs,
                          activation=jax.nn.silu)
    self.norm_out = RefinerGates(width, rngs=rngs, zero=zero_init)

  def __call__(self, x_NxLxD, silu_c_NxD, mask: attention.GroupMask):
    gate_attn, gate_mlp = jnp.split(self.norm_out.linear(silu_c_NxD), 2, -1)
    x = x_NxLxD + self.attn(self.norm1(x_NxLxD), mask) * gate_attn[:, None]
    return x + self.ff(self.norm2(x)) * gate_mlp[:, None]


class TokenRefiner(nnx.Module):
  """Holds the stacked refiner blocks (`token_refiner.refiner_blocks`)."""

  def __init__(self, m, *, rngs: nnx.Rngs):

    @nnx.split_rngs(splits=m.num_refiner_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0,
              transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make_blocks(rngs):
      return RefinerBlock(m.width, m.num_heads, m.head_dim, rngs=rngs,
                          zero_init=m.zero_init)

    self.refiner_blocks = make_blocks(rngs)

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
    graphdef, params = nnx.split(self.refiner_blocks)

    def body(x, layer_params):
      return nnx.merge(graphdef, layer_params)(x, silu_c, mask), None

    x, _ = jax.lax.scan(body, x_NxLxD, params)
    return x


def masked_mean(x_NxLxE: jax.Array, valid_NxL: jax.Array) -> jax.Array:
  """Mean over the valid tokens (diffusers' refiner pooling), in float32.

  diffusers divides by the count and gives NaN for an empty prompt; here an
  empty prompt pools to 0.
  """
  w = valid_NxL.astype(jnp.float32)[..., None]
  total = jnp.sum(x_NxLxE.astype(jnp.float32) * w, axis=1)
  return (total / jnp.maximum(jnp.sum(w, axis=1), 1.0)).astype(x_NxLxE.dtype)
