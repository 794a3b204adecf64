"""Small layers with logical axis names, named as diffusers names them.

Linear layers are `nnx.Linear` (kernel [in, out]; diffusers' `weight` is its
transpose). Every parameter carries logical axis names (`out_sharding`
metadata, applied to a mesh by `lct_jax.parallel`), never eagerly sharded.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from lct_jax.model.remat import remat

LN_EPS = 1e-6   # LayerNorm and RMSNorm epsilon (HunyuanVideo)


def _named(init, names: Sequence[str | None]):
  return nnx.with_partitioning(init, tuple(names), eager_sharding=False)


def linear(d_in: int, d_out: int, names: Sequence[str | None], *,
           rngs: nnx.Rngs, zero: bool = False, bias: bool = True
           ) -> nnx.Linear:
  """A Linear whose kernel is named `names` (in, out) and bias `names[1:]`."""
  kernel_init = (nnx.initializers.zeros_init() if zero
                 else nnx.initializers.xavier_uniform())
  return nnx.Linear(
      d_in, d_out, use_bias=bias, rngs=rngs,
      kernel_init=_named(kernel_init, names),
      bias_init=_named(nnx.initializers.zeros_init(), names[1:]))


class RMSNorm(nnx.Module):
  """RMS norm over the last axis with a learned `weight` (diffusers name)."""

  def __init__(self, dim: int, *, eps: float = LN_EPS):
    self.eps = eps
    self.weight = nnx.Param(
        jnp.ones((dim,), jnp.float32),
        out_sharding=(None,), eager_sharding=False)

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, -1, keepdims=True) + self.eps)
    return (x32 * self.weight[...].astype(jnp.float32)).astype(x.dtype)


def normalize32(x: jax.Array, eps: float = LN_EPS) -> jax.Array:
  """x standardised over the last axis, in float32."""
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, -1, keepdims=True)
  var = jnp.mean(jnp.square(x32 - mean), -1, keepdims=True)
  return (x32 - mean) * jax.lax.rsqrt(var + eps)


def layer_norm(x: jax.Array, eps: float = LN_EPS) -> jax.Array:
  """LayerNorm without affine parameters, statistics in float32."""
  return normalize32(x, eps).astype(x.dtype)


def modulate(x_BxGxTxD: jax.Array, shift_BxGxD: jax.Array,
             scale_BxGxD: jax.Array) -> jax.Array:
  """adaLN: per-group (shift, scale) broadcast over that group's tokens."""
  return x_BxGxTxD * (1 + scale_BxGxD[:, :, None]) + shift_BxGxD[:, :, None]


def gelu_tanh(x: jax.Array) -> jax.Array:
  return jax.nn.gelu(x, approximate=True)


class FeedForward(nnx.Module):
  """MLP: diffusers `ff.net.0.proj` -> `net_0_proj`, `net.2` -> `net_2`.

  GELU(tanh) in the MMDiT blocks; the token refiner uses SiLU (diffusers'
  "linear-silu"). The activation is plain Python, not a parameter.
  """

  def __init__(self, width: int, hidden: int, *, rngs: nnx.Rngs,
               activation=gelu_tanh):
    self.activation = activation
    self.net_0_proj = linear(width, hidden, ("embed", "mlp"), rngs=rngs)
    self.net_2 = linear(hidden, width, ("mlp", "embed"), rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.net_2(self.activation(self.net_0_proj(x)))


class AdaLNZero(nnx.Module):
  """`norm1.linear`: c -> 6 modulation vectors (shift, scale, gate) x 2.

  Computed per group ([B, G, 6D], tiny) and broadcast to the group's tokens
  by `modulate`, never materialised per token. `chunks=3` is the single-
  stream blocks' `norm.linear` (one shift, scale, gate); `chunks=2` the
  output norm's (scale, shift) and the refiner's gates.
  """

  def __init__(self, width: int, *, rngs: nnx.Rngs, zero: bool,
               chunks: int = 6):
    self.chunks = chunks
    self.linear = linear(width, chunks * width, ("embed", "modulation"),
                         rngs=rngs, zero=zero)

  def __call__(self, silu_c_BxGxD: jax.Array):
    return jnp.split(self.linear(silu_c_BxGxD), self.chunks, axis=-1)


def stack(num_layers: int, make, rngs: nnx.Rngs):
  """`num_layers` modules `make(rngs)` stacked on a leading 'layers' axis,
  for `scan_stack`: compile time does not grow with depth."""
  make = nnx.vmap(make, in_axes=(0,), out_axes=0,
                  transform_metadata={nnx.PARTITION_NAME: "layers"})
  return nnx.split_rngs(splits=num_layers)(make)(rngs)


def scan_stack(stacked, body, carry, xs=None, *, remat_policy="none"):
  """One `lax.scan` of `body(layer, carry, x) -> (carry, y)` over the layers
  of a `stack` and the leading axis of `xs`, under a remat policy."""
  graphdef, params = nnx.split(stacked)

  def step(carry, params_and_x):
    layer_params, x = params_and_x
    return body(nnx.merge(graphdef, layer_params), carry, x)

  return jax.lax.scan(remat(step, remat_policy), carry, (params, xs))
