"""The VAE's layers, channels-last, named as diffusers names their weights.

Every tensor is [B, F, H, W, C] (batch, frames, height, width, channels): on
TPU the channel dimension is the one the vector units tile, and convolutions
take NDHWC directly. diffusers is channels-first; the conversion
(`lct_jax.vae.convert`) transposes conv kernels, torch [out, in, kt, kh, kw]
-> here [kt, kh, kw, in, out], and linear weights [out, in] -> [in, out].
Attribute names are diffusers' module names (`conv1.conv`, `to_out.0`,
`downsamplers.0.conv.conv`), so a parameter path is its state-dict key with
`kernel` for `weight`.

Arithmetic follows the input's dtype (parameters are cast to it);
normalisation statistics and the attention softmax are float32.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from lct_jax.vae.config import RESNET_EPS

_CONV_DIMS = ("NDHWC", "DHWIO", "NDHWC")


def _triple(v) -> tuple[int, int, int]:
  return (v, v, v) if isinstance(v, int) else tuple(v)


def _uniform(rngs: nnx.Rngs, shape, fan_in: int) -> nnx.Param:
  """torch's default Conv / Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
  (converted weights replace it; it matters only for tests and benchmarks)."""
  bound = 1.0 / math.sqrt(fan_in)
  return nnx.Param(jax.random.uniform(rngs.params(), shape, jnp.float32,
                                      -bound, bound))


class Conv3d(nnx.Module):
  """torch `nn.Conv3d` without padding: `kernel` [kt, kh, kw, in, out]."""

  def __init__(self, c_in: int, c_out: int, kernel_size=3, stride=1, *,
               rngs: nnx.Rngs):
    k = _triple(kernel_size)
    fan_in = c_in * math.prod(k)
    self.stride = _triple(stride)
    self.kernel = _uniform(rngs, k + (c_in, c_out), fan_in)
    self.bias = _uniform(rngs, (c_out,), fan_in)

  def __call__(self, x_BxFxHxWxC: jax.Array) -> jax.Array:
    y = jax.lax.conv_general_dilated(
        x_BxFxHxWxC, self.kernel[...].astype(x_BxFxHxWxC.dtype),
        window_strides=self.stride, padding="VALID",
        dimension_numbers=_CONV_DIMS)
    return y + self.bias[...].astype(y.dtype)


class CausalConv3d(nnx.Module):
  """diffusers `HunyuanVideoCausalConv3d`: edge-replicate padding, all of
  the temporal padding before the first frame.

  A frame's output sees only itself and earlier frames, so the first frame
  encodes alone (an image is a 1-frame video). The padding is replicate in
  space too, not zero. diffusers' pad tuple is (k[0]//2, k[0]//2, k[1]//2,
  k[1]//2, k[2]-1, 0) in F.pad's last-dimension-first order, i.e. width by
  kt//2, height by kh//2, time by kw-1; it is copied as it is (all kernels
  here are cubic, where the order makes no difference).
  """

  def __init__(self, c_in: int, c_out: int, kernel_size=3, stride=1, *,
               rngs: nnx.Rngs):
    self.kernel_size = _triple(kernel_size)
    self.conv = Conv3d(c_in, c_out, kernel_size, stride, rngs=rngs)

  def __call__(self, x_BxFxHxWxC: jax.Array) -> jax.Array:
    k0, k1, k2 = self.kernel_size
    pad = ((0, 0), (k2 - 1, 0), (k1 // 2, k1 // 2), (k0 // 2, k0 // 2),
           (0, 0))
    if any(p for pair in pad for p in pair):
      x_BxFxHxWxC = jnp.pad(x_BxFxHxWxC, pad, mode="edge")
    return self.conv(x_BxFxHxWxC)


class GroupNorm(nnx.Module):
  """torch `nn.GroupNorm` over channels-last input, statistics in float32.

  Groups are runs of C / G adjacent channels (torch's grouping); the
  statistics of a group span every position (frames, height, width).
  """

  def __init__(self, groups: int, channels: int, eps: float = RESNET_EPS):
    self.groups, self.eps = groups, eps
    self.weight = nnx.Param(jnp.ones((channels,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((channels,), jnp.float32))

  def __call__(self, x_Bx___xC: jax.Array) -> jax.Array:
    b, c = x_Bx___xC.shape[0], x_Bx___xC.shape[-1]
    x32 = x_Bx___xC.astype(jnp.float32).reshape(b, -1, self.groups,
                                                c // self.groups)
    mean = jnp.mean(x32, axis=(1, 3), keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=(1, 3), keepdims=True)
    y = ((x32 - mean) * jax.lax.rsqrt(var + self.eps)).reshape(
        x_Bx___xC.shape)
    y = y * self.weight[...] + self.bias[...]
    return y.astype(x_Bx___xC.dtype)


class Dense(nnx.Module):
  """torch `nn.Linear`: `kernel` [in, out] (torch's weight transposed)."""

  def __init__(self, c_in: int, c_out: int, *, rngs: nnx.Rngs):
    self.kernel = _uniform(rngs, (c_in, c_out), c_in)
    self.bias = _uniform(rngs, (c_out,), c_in)

  def __call__(self, x: jax.Array) -> jax.Array:
    return (x @ self.kernel[...].astype(x.dtype)
            + self.bias[...].astype(x.dtype))


class ResnetBlock(nnx.Module):
  """diffusers `HunyuanVideoResnetBlockCausal3D` (dropout 0: omitted)."""

  def __init__(self, c_in: int, c_out: int, groups: int, *, rngs: nnx.Rngs):
    self.norm1 = GroupNorm(groups, c_in)
    self.conv1 = CausalConv3d(c_in, c_out, 3, rngs=rngs)
    self.norm2 = GroupNorm(groups, c_out)
    self.conv2 = CausalConv3d(c_out, c_out, 3, rngs=rngs)
    self.conv_shortcut = (CausalConv3d(c_in, c_out, 1, rngs=rngs)
                          if c_in != c_out else None)

  def __call__(self, x_BxFxHxWxC: jax.Array) -> jax.Array:
    h = self.conv1(jax.nn.silu(self.norm1(x_BxFxHxWxC)))
    h = self.conv2(jax.nn.silu(self.norm2(h)))
    if self.conv_shortcut is not None:
      x_BxFxHxWxC = self.conv_shortcut(x_BxFxHxWxC)
    return h + x_BxFxHxWxC


class Downsample(nnx.Module):
  """diffusers `HunyuanVideoDownsampleCausal3D`: a strided causal conv.

  Stride (2, 2, 2) maps 1 + 2k frames to 1 + k (the first frame stays its
  own) and H to H / 2; (1, 2, 2) is spatial only, (2, 1, 1) temporal only.
  """

  def __init__(self, channels: int, stride: tuple[int, int, int], *,
               rngs: nnx.Rngs):
    self.conv = CausalConv3d(channels, channels, 3, stride, rngs=rngs)

  def __call__(self, x_BxFxHxWxC: jax.Array) -> jax.Array:
    return self.conv(x_BxFxHxWxC)


class Upsample(nnx.Module):
  """diffusers `HunyuanVideoUpsampleCausal3D`: nearest-neighbour upsampling,
  the first frame in space only (1 + k frames -> 1 + 2k), then a causal
  conv."""

  def __init__(self, channels: int, factor: tuple[int, int, int], *,
               rngs: nnx.Rngs):
    self.factor = tuple(factor)
    self.conv = CausalConv3d(channels, channels, 3, rngs=rngs)

  def __call__(self, x_BxFxHxWxC: jax.Array) -> jax.Array:
    ft, fh, fw = self.factor
    up = lambda t: jnp.repeat(jnp.repeat(t, fh, axis=2), fw, axis=3)
    first = up(x_BxFxHxWxC[:, :1])
    if x_BxFxHxWxC.shape[1] > 1:
      rest = jnp.repeat(up(x_BxFxHxWxC[:, 1:]), ft, axis=1)
      first = jnp.concatenate([first, rest], axis=1)
    return self.conv(first)


def frame_causal_mask(num_frames: int, frame_tokens: int) -> jax.Array:
  """[N, N] bool, N = F * frame_tokens: query i sees key j iff j's frame is
  not after i's. diffusers' `prepare_causal_attention_mask` as a boolean
  (it is 0 / -inf added to the logits)."""
  frame_N = jnp.arange(num_frames * frame_tokens) // frame_tokens
  return frame_N[None, :] <= frame_N[:, None]


class MidAttention(nnx.Module):
  """The mid-block's diffusers `Attention`: GroupNorm, one head of width C
  (attention_head_dim = C), frame-causal mask, bias, residual.

  Tokens are the (f, h, w) positions in that order, as diffusers flattens
  them. The [N, N] logits are materialised; N is one tile's latent
  positions (5 x 32 x 32 = 5120 at the default tile), about 100 MiB.
  """

  def __init__(self, channels: int, groups: int, *, rngs: nnx.Rngs):
    self.group_norm = GroupNorm(groups, channels)
    self.to_q = Dense(channels, channels, rngs=rngs)
    self.to_k = Dense(channels, channels, rngs=rngs)
    self.to_v = Dense(channels, channels, rngs=rngs)
    self.to_out = nnx.List([Dense(channels, channels, rngs=rngs)])

  def __call__(self, x_BxFxHxWxC: jax.Array) -> jax.Array:
    b, f, h, w, c = x_BxFxHxWxC.shape
    x_BxNxC = self.group_norm(x_BxFxHxWxC).reshape(b, f * h * w, c)
    q_BxNxC = self.to_q(x_BxNxC)
    k_BxNxC = self.to_k(x_BxNxC)
    v_BxNxC = self.to_v(x_BxNxC)
    logits_BxNxN = jnp.einsum("bqc,bkc->bqk", q_BxNxC, k_BxNxC,
                              preferred_element_type=jnp.float32)
    logits_BxNxN = jnp.where(frame_causal_mask(f, h * w)[None],
                             logits_BxNxN * (c ** -0.5), -jnp.inf)
    probs_BxNxN = jax.nn.softmax(logits_BxNxN, axis=-1)
    o_BxNxC = jnp.einsum("bqk,bkc->bqc", probs_BxNxN.astype(v_BxNxC.dtype),
                         v_BxNxC)
    out = self.to_out[0](o_BxNxC).reshape(x_BxFxHxWxC.shape)
    return out + x_BxFxHxWxC


class MidBlock(nnx.Module):
  """diffusers `HunyuanVideoMidBlock3D` (num_layers=1): resnet, attention
  (unless mid_block_add_attention=False), resnet."""

  def __init__(self, channels: int, groups: int, add_attention: bool, *,
               rngs: nnx.Rngs):
    self.resnets = nnx.List([ResnetBlock(channels, channels, groups,
                                         rngs=rngs) for _ in range(2)])
    self.attentions = (nnx.List([MidAttention(channels, groups, rngs=rngs)])
                       if add_attention else None)

  def __call__(self, x_BxFxHxWxC: jax.Array) -> jax.Array:
    x_BxFxHxWxC = self.resnets[0](x_BxFxHxWxC)
    if self.attentions is not None:
      x_BxFxHxWxC = self.attentions[0](x_BxFxHxWxC)
    return self.resnets[1](x_BxFxHxWxC)
