"""diffusers' `AutoencoderKLHunyuanVideo` as an NNX module, channels-last.

  AutoencoderKL(config, rngs)
    .encoder          HunyuanVideoEncoder3D: conv_in, down_blocks.i, mid_block,
                      conv_norm_out, conv_out (2 * latent_channels)
    .quant_conv       1x1x1 conv on (mean, logvar)
    .post_quant_conv  1x1x1 conv on the latent
    .decoder          HunyuanVideoDecoder3D: conv_in, mid_block, up_blocks.i
                      (layers_per_block + 1 resnets each), conv_norm_out,
                      conv_out
    .moments(video)   -> quant_conv(encoder(video)), [B, f, h, w, 2L]
    .decode_raw(z)    -> decoder(post_quant_conv(z)), [B, F, H, W, 3]

Which blocks resample comes from `VAEConfig.down_strides` (diffusers' rule).
The methods here do no input checks and no posterior; `lct_jax.vae.codec`
is the API (encode, decode, latent scaling), `lct_jax.vae.tiling` the tiled
version. The config is static module metadata (hashable, in the graphdef).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lct_jax.vae.config import LOGVAR_RANGE, VAEConfig
from lct_jax.vae.layers import (CausalConv3d, Conv3d, Downsample, GroupNorm,
                                MidBlock, ResnetBlock, Upsample)


class DownBlock(nnx.Module):
  """diffusers `HunyuanVideoDownBlock3D`: resnets, then an optional
  strided causal conv (`downsamplers.0`)."""

  def __init__(self, c_in: int, c_out: int, num_layers: int, groups: int,
               stride: tuple[int, int, int] | None, *, rngs: nnx.Rngs):
    self.resnets = nnx.List([
        ResnetBlock(c_in if i == 0 else c_out, c_out, groups, rngs=rngs)
        for i in range(num_layers)])
    self.downsamplers = (nnx.List([Downsample(c_out, stride, rngs=rngs)])
                         if stride else None)

  def __call__(self, x_BxFxHxWxC: jax.Array) -> jax.Array:
    for resnet in self.resnets:
      x_BxFxHxWxC = resnet(x_BxFxHxWxC)
    if self.downsamplers is not None:
      x_BxFxHxWxC = self.downsamplers[0](x_BxFxHxWxC)
    return x_BxFxHxWxC


class UpBlock(nnx.Module):
  """diffusers `HunyuanVideoUpBlock3D`: resnets, then an optional
  nearest upsampling + causal conv (`upsamplers.0`)."""

  def __init__(self, c_in: int, c_out: int, num_layers: int, groups: int,
               factor: tuple[int, int, int] | None, *, rngs: nnx.Rngs):
    self.resnets = nnx.List([
        ResnetBlock(c_in if i == 0 else c_out, c_out, groups, rngs=rngs)
        for i in range(num_layers)])
    self.upsamplers = (nnx.List([Upsample(c_out, factor, rngs=rngs)])
                       if factor else None)

  def __call__(self, x_BxFxHxWxC: jax.Array) -> jax.Array:
    for resnet in self.resnets:
      x_BxFxHxWxC = resnet(x_BxFxHxWxC)
    if self.upsamplers is not None:
      x_BxFxHxWxC = self.upsamplers[0](x_BxFxHxWxC)
    return x_BxFxHxWxC


class Encoder(nnx.Module):
  """diffusers `HunyuanVideoEncoder3D` (double_z: 2 * latent channels)."""

  def __init__(self, c: VAEConfig, *, rngs: nnx.Rngs):
    ch, g = c.block_out_channels, c.norm_num_groups
    self.conv_in = CausalConv3d(c.in_channels, ch[0], 3, rngs=rngs)
    self.down_blocks = nnx.List([
        DownBlock(ch[max(i - 1, 0)], ch[i], c.layers_per_block, g, stride,
                  rngs=rngs)
        for i, stride in enumerate(c.down_strides)])
    self.mid_block = MidBlock(ch[-1], g, c.mid_block_add_attention,
                              rngs=rngs)
    self.conv_norm_out = GroupNorm(g, ch[-1])
    self.conv_out = CausalConv3d(ch[-1], 2 * c.latent_channels, 3, rngs=rngs)

  def __call__(self, x_BxFxHxWxC: jax.Array) -> jax.Array:
    x_BxFxHxWxC = self.conv_in(x_BxFxHxWxC)
    for block in self.down_blocks:
      x_BxFxHxWxC = block(x_BxFxHxWxC)
    x_BxFxHxWxC = self.mid_block(x_BxFxHxWxC)
    return self.conv_out(jax.nn.silu(self.conv_norm_out(x_BxFxHxWxC)))


class Decoder(nnx.Module):
  """diffusers `HunyuanVideoDecoder3D`: the encoder mirrored, with one more
  resnet per block."""

  def __init__(self, c: VAEConfig, *, rngs: nnx.Rngs):
    ch, g = tuple(reversed(c.block_out_channels)), c.norm_num_groups
    self.conv_in = CausalConv3d(c.latent_channels, ch[0], 3, rngs=rngs)
    self.mid_block = MidBlock(ch[0], g, c.mid_block_add_attention, rngs=rngs)
    self.up_blocks = nnx.List([
        UpBlock(ch[max(i - 1, 0)], ch[i], c.layers_per_block + 1, g, factor,
                rngs=rngs)
        for i, factor in enumerate(c.up_factors)])
    self.conv_norm_out = GroupNorm(g, ch[-1])
    self.conv_out = CausalConv3d(ch[-1], c.out_channels, 3, rngs=rngs)

  def __call__(self, z_BxfxhxwxC: jax.Array) -> jax.Array:
    x = self.mid_block(self.conv_in(z_BxfxhxwxC))
    for block in self.up_blocks:
      x = block(x)
    return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))


class AutoencoderKL(nnx.Module):
  """diffusers `AutoencoderKLHunyuanVideo`'s modules and weights."""

  def __init__(self, config: VAEConfig, *, rngs: nnx.Rngs):
    self.config = config
    lc = config.latent_channels
    self.encoder = Encoder(config, rngs=rngs)
    self.decoder = Decoder(config, rngs=rngs)
    self.quant_conv = Conv3d(2 * lc, 2 * lc, 1, rngs=rngs)
    self.post_quant_conv = Conv3d(lc, lc, 1, rngs=rngs)

  def moments(self, video_BxFxHxWxC: jax.Array) -> jax.Array:
    """The posterior's parameters before the split and the logvar clamp,
    [B, f, h, w, 2L] (diffusers' `_encode`; what tiles blend)."""
    return self.quant_conv(self.encoder(video_BxFxHxWxC))

  def decode_raw(self, z_BxfxhxwxL: jax.Array) -> jax.Array:
    """The decoded video (diffusers' `_decode` untiled), unclamped."""
    return self.decoder(self.post_quant_conv(z_BxfxhxwxL))


def posterior(moments_Bx___x2L: jax.Array) -> tuple[jax.Array, jax.Array]:
  """diffusers' `DiagonalGaussianDistribution`: channels split into (mean,
  logvar), logvar clamped to [-30, 20]."""
  mean, logvar = jnp.split(moments_Bx___x2L, 2, axis=-1)
  return mean, jnp.clip(logvar, *LOGVAR_RANGE)


@functools.lru_cache(maxsize=8)
def _abstract_split(config: VAEConfig):
  return nnx.split(nnx.eval_shape(
      lambda: AutoencoderKL(config, rngs=nnx.Rngs(0))))


def abstract(config: VAEConfig) -> AutoencoderKL:
  """The model with ShapeDtypeStruct leaves: nothing allocated. (Cached
  per config: tracing the initialisers takes a second.)"""
  graphdef, state = _abstract_split(config)
  return nnx.merge(graphdef, jax.tree.map(lambda a: a, state))


def init_params(config: VAEConfig, seed: int = 0) -> dict:
  """Random params (pure dict of numpy float32) with torch's default init:
  conv / linear weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
  norm scales 1 and shifts 0 (the modules' own initialisers, drawn with
  numpy: eagerly in JAX every shape would compile its own kernel, half a
  minute for a tiny model on a small CPU)."""
  rng = np.random.default_rng(seed)
  state = nnx.to_pure_dict(nnx.state(abstract(config), nnx.Param))

  def draw(node: dict) -> dict:
    out = {}
    for name, v in node.items():
      if isinstance(v, dict):
        out[name] = draw(v)
      elif "kernel" in node:                    # conv / linear: kernel, bias
        bound = 1.0 / np.sqrt(np.prod(node["kernel"].shape[:-1]))
        out[name] = rng.uniform(-bound, bound, v.shape).astype(np.float32)
      else:                                     # group norm: weight, bias
        out[name] = np.full(v.shape, name == "weight", np.float32)
    return out

  return draw(state)


def cast(vae: AutoencoderKL, dtype) -> AutoencoderKL:
  """A copy whose parameters are `dtype` (e.g. bfloat16 for inference)."""
  graphdef, state = nnx.split(vae)
  return nnx.merge(graphdef, jax.tree.map(lambda a: a.astype(dtype), state))


def num_params(vae: AutoencoderKL) -> int:
  return sum(int(jnp.size(a)) for a in jax.tree.leaves(nnx.state(vae)))
