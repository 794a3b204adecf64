"""The single-stream block (HunyuanVideo / Flux), per-group modulated.

One set of weights for video and text tokens: adaLN (shift, scale, gate),
a fused attention + MLP branch (`proj_out` reads [attention ; MLP hidden])
and one gated residual. Names mirror diffusers'
`HunyuanVideoSingleTransformerBlock`: `attn.{to_q,to_k,to_v,norm_q,norm_k}`
(no output projection: `proj_out` does it), `norm.linear`, `proj_mlp`,
`proj_out`.

Every op except attention is per token, so the two streams are processed
separately with the shared weights and meet only in the joint attention:
numerically the same as diffusers' concatenation, and the per-group
modulation stays a [B, G, D] broadcast.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lct_jax.model.layers import (AdaLNZero, RMSNorm, gelu_tanh, layer_norm,
                                  linear, modulate)
from lct_jax.model.streams import BlockInputs, StreamKV, joint_attention


class SingleAttention(nnx.Module):
  """Q/K/V shared by both streams, per-head RMS QK norm; no `to_out`."""

  def __init__(self, width: int, num_heads: int, head_dim: int, *,
               rngs: nnx.Rngs):
    self.num_heads, self.head_dim = num_heads, head_dim
    inner = num_heads * head_dim
    names = ("embed", "heads")
    self.to_q = linear(width, inner, names, rngs=rngs)
    self.to_k = linear(width, inner, names, rngs=rngs)
    self.to_v = linear(width, inner, names, rngs=rngs)
    self.norm_q = RMSNorm(head_dim)
    self.norm_k = RMSNorm(head_dim)

  def _heads(self, x_BxSxD):
    return x_BxSxD.reshape(*x_BxSxD.shape[:-1], self.num_heads, self.head_dim)

  def merge_heads(self, o_BxSxHxDh):
    # An explicit width, not -1: a stream may have no tokens (zero size).
    return o_BxSxHxDh.reshape(*o_BxSxHxDh.shape[:-2],
                              self.num_heads * self.head_dim)

  def qkv(self, x_BxSxD):
    """-> q, k, v [..., H, Dh], before RoPE."""
    return (self.norm_q(self._heads(self.to_q(x_BxSxD))),
            self.norm_k(self._heads(self.to_k(x_BxSxD))),
            self._heads(self.to_v(x_BxSxD)))


class SingleStreamBlock(nnx.Module):
  """adaLN-Zero single-stream block; modulation per group, not per token."""

  def __init__(self, width: int, num_heads: int, head_dim: int,
               mlp_ratio: float, *, rngs: nnx.Rngs, zero_init: bool = True):
    hidden = int(width * mlp_ratio)
    self.norm = AdaLNZero(width, rngs=rngs, zero=zero_init, chunks=3)
    self.attn = SingleAttention(width, num_heads, head_dim, rngs=rngs)
    self.proj_mlp = linear(width, hidden, ("embed", "mlp"), rngs=rngs)
    # Input is [attention heads ; MLP hidden]; both are tensor-sharded
    # dimensions, so the concatenation is named like the MLP one.
    self.proj_out = linear(width + hidden, width, ("mlp", "embed"),
                           rngs=rngs)

  def __call__(self, vid_BxVxTxD: jax.Array, txt_BxGxLxD: jax.Array,
               ctx: BlockInputs, prefix: StreamKV | None = None
               ) -> tuple[jax.Array, jax.Array, StreamKV]:
    """-> (video, text, own pre-RoPE K/V), as `DualStreamBlock`."""
    v_shift, v_scale, v_gate = self.norm(ctx.silu_c_vid_BxVxD)
    t_shift, t_scale, t_gate = self.norm(ctx.silu_c_txt_BxGxD)
    vid_in = modulate(layer_norm(vid_BxVxTxD), v_shift, v_scale)
    txt_in = modulate(layer_norm(txt_BxGxLxD), t_shift, t_scale)

    # Joint attention over [video ; text] (diffusers' order), as in the
    # dual-stream block.
    (o_vid, o_txt), own_kv = joint_attention(
        self.attn.qkv(vid_in), self.attn.qkv(txt_in), ctx, prefix)

    def branch(x_in, o_in):
      mlp = gelu_tanh(self.proj_mlp(x_in))
      return self.proj_out(jnp.concatenate([self.attn.merge_heads(o_in), mlp],
                                           axis=-1))

    vid = vid_BxVxTxD + v_gate[:, :, None] * branch(vid_in, o_vid)
    txt = txt_BxGxLxD + t_gate[:, :, None] * branch(txt_in, o_txt)
    return vid, txt, own_kv
