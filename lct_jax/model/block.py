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
from lct_jax.model.single_block import SingleAttention
from lct_jax.model.streams import BlockInputs, StreamKV, joint_attention


class JointAttention(SingleAttention):
  """Separate Q/K/V/out per stream (the video stream's are
  `SingleAttention`'s), per-head RMS QK norm, one attention."""

  def __init__(self, width: int, num_heads: int, head_dim: int, *,
               rngs: nnx.Rngs):
    super().__init__(width, num_heads, head_dim, rngs=rngs)
    inner = num_heads * head_dim
    q_names, o_names = ("embed", "heads"), ("heads", "embed")
    self.to_out_0 = linear(inner, width, o_names, rngs=rngs)
    self.add_q_proj = linear(width, inner, q_names, rngs=rngs)
    self.add_k_proj = linear(width, inner, q_names, rngs=rngs)
    self.add_v_proj = linear(width, inner, q_names, rngs=rngs)
    self.to_add_out = linear(inner, width, o_names, rngs=rngs)
    self.norm_added_q = RMSNorm(head_dim)
    self.norm_added_k = RMSNorm(head_dim)

  def qkv(self, vid_BxVxTxD, txt_BxGxLxD):  # pylint: disable=arguments-differ
    """Per stream (q, k, v) before RoPE, [B, V, T, H, Dh] and [B, G, L, H, Dh].

    Video keeps its slot axis: its tokens (T) are what 'context' shards, and
    flattening V x T would interleave shards (a reshard on every layer).
    """
    q_t = self.norm_added_q(self._heads(self.add_q_proj(txt_BxGxLxD)))
    k_t = self.norm_added_k(self._heads(self.add_k_proj(txt_BxGxLxD)))
    v_t = self._heads(self.add_v_proj(txt_BxGxLxD))
    return super().qkv(vid_BxVxTxD), (q_t, k_t, v_t)

  def output(self, o_vid_BxVxTxHxDh, o_txt_BxGxLxHxDh):
    """Projects each stream's attention output back to the width."""
    return (self.to_out_0(self.merge_heads(o_vid_BxVxTxHxDh)),
            self.to_add_out(self.merge_heads(o_txt_BxGxLxHxDh)))


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
