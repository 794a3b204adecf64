"""The dual-stream MMDiT block (SD3 / HunyuanVideo), per-group modulated.

Video and text streams have separate weights and meet in one joint attention.
Parameter names mirror diffusers' `HunyuanVideoTransformerBlock`
(`attn.to_out.0` -> `attn.to_out_0`, `ff.net.0.proj` -> `ff.net_0_proj`).
"""
from __future__ import annotations

import jax
from flax import nnx

from lct_jax.model.layers import (AdaLNZero, FeedForward, RMSNorm, layer_norm,
                                  linear, modulate)
from lct_jax.model.streams import BlockInputs, StreamKV, joint_attention


class JointAttention(nnx.Module):
  """Separate Q/K/V/out per stream, per-head RMS QK norm, one attention."""

  def __init__(self, width: int, num_heads: int, head_dim: int, *,
               rngs: nnx.Rngs):
    self.num_heads, self.head_dim = num_heads, head_dim
    inner = num_heads * head_dim
    q_names, o_names = ("embed", "heads"), ("heads", "embed")
    self.to_q = linear(width, inner, q_names, rngs=rngs)
    self.to_k = linear(width, inner, q_names, rngs=rngs)
    self.to_v = linear(width, inner, q_names, rngs=rngs)
    self.to_out_0 = linear(inner, width, o_names, rngs=rngs)
    self.add_q_proj = linear(width, inner, q_names, rngs=rngs)
    self.add_k_proj = linear(width, inner, q_names, rngs=rngs)
    self.add_v_proj = linear(width, inner, q_names, rngs=rngs)
    self.to_add_out = linear(inner, width, o_names, rngs=rngs)
    self.norm_q = RMSNorm(head_dim)
    self.norm_k = RMSNorm(head_dim)
    self.norm_added_q = RMSNorm(head_dim)
    self.norm_added_k = RMSNorm(head_dim)

  def _heads(self, x_BxSxD):
    return x_BxSxD.reshape(*x_BxSxD.shape[:-1], self.num_heads, self.head_dim)

  def qkv(self, vid_BxVxTxD, txt_BxGxLxD):
    """Per stream (q, k, v) before RoPE, [B, V, T, H, Dh] and [B, G, L, H, Dh].

    Video keeps its slot axis: its tokens (T) are what 'context' shards, and
    flattening V x T would interleave shards (a reshard on every layer).
    """
    q_v = self.norm_q(self._heads(self.to_q(vid_BxVxTxD)))
    k_v = self.norm_k(self._heads(self.to_k(vid_BxVxTxD)))
    v_v = self._heads(self.to_v(vid_BxVxTxD))
    q_t = self.norm_added_q(self._heads(self.add_q_proj(txt_BxGxLxD)))
    k_t = self.norm_added_k(self._heads(self.add_k_proj(txt_BxGxLxD)))
    v_t = self._heads(self.add_v_proj(txt_BxGxLxD))
    return (q_v, k_v, v_v), (q_t, k_t, v_t)

  def output(self, o_vid_BxVxTxHxDh, o_txt_BxGxLxHxDh):
    """Projects each stream's attention output back to the width."""
    # An explicit width, not -1: a stream may have no tokens (zero size).
    inner = self.num_heads * self.head_dim
    flat = lambda o: o.reshape(*o.shape[:-2], inner)
    return (self.to_out_0(flat(o_vid_BxVxTxHxDh)),
            self.to_add_out(flat(o_txt_BxGxLxHxDh)))


class DualStreamBlock(nnx.Module):
  """adaLN-Zero dual-stream block; modulation per group, not per token."""

  def __init__(self, width: int, num_heads: int, head_dim: int,
               mlp_ratio: float, *, rngs: nnx.Rngs, zero_init: bool = True):
    hidden = int(width * mlp_ratio)
    self.norm1 = AdaLNZero(width, rngs=rngs, zero=zero_init)
    self.norm1_context = AdaLNZero(width, rngs=rngs, zero=zero_init)
    self.attn = JointAttention(width, num_heads, head_dim, rngs=rngs)
    self.ff = FeedForward(width, hidden, rngs=rngs)
    self.ff_context = FeedForward(width, hidden, rngs=rngs)

  def __call__(self, vid_BxVxTxD: jax.Array, txt_BxGxLxD: jax.Array,
               ctx: BlockInputs, prefix: StreamKV | None = None
               ) -> tuple[jax.Array, jax.Array, StreamKV]:
    """-> (video, text, own pre-RoPE K/V). The own tokens attend to
    [prefix ; own] keys (`streams.joint_attention`); `prefix` is this
    layer's K/V of the history (the KV cache), or None for a whole scene.
    """
    (v_shift1, v_scale1, v_gate1, v_shift2, v_scale2,
     v_gate2) = self.norm1(ctx.silu_c_vid_BxVxD)
    (t_shift1, t_scale1, t_gate1, t_shift2, t_scale2,
     t_gate2) = self.norm1_context(ctx.silu_c_txt_BxGxD)
    vid_in = modulate(layer_norm(vid_BxVxTxD), v_shift1, v_scale1)
    txt_in = modulate(layer_norm(txt_BxGxLxD), t_shift1, t_scale1)
    (o_vid, o_txt), own_kv = joint_attention(
        *self.attn.qkv(vid_in, txt_in), ctx, prefix)
    vid_attn, txt_attn = self.attn.output(o_vid, o_txt)
    vid = vid_BxVxTxD + v_gate1[:, :, None] * vid_attn
    txt = txt_BxGxLxD + t_gate1[:, :, None] * txt_attn

    # Separate MLPs.
    vid = vid + v_gate2[:, :, None] * self.ff(
        modulate(layer_norm(vid), v_shift2, v_scale2))
    txt = txt + t_gate2[:, :, None] * self.ff_context(
        modulate(layer_norm(txt), t_shift2, t_scale2))
    return vid, txt, own_kv
