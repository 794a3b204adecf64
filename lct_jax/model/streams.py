"""What every block of one forward shares, and the one joint attention.

A forward computes the tokens of some groups (its own: a whole scene, one
new shot, or the global prompt alone) and may read the keys and values of
earlier groups (a prefix: the KV cache's history). Both streams, video
[B, V, T, D] and text [B, G, L, D], keep one run of tokens per slot; the
prefix's slots come first in each stream, so the keys of a stream are
[prefix slots ; own slots], in the order of the geometry the layout was
built for.

Keys and values enter the cache before RoPE: which history shots are in
the pool changes their positions (`layout.build_layout`), so each forward
rotates them with its own layout's tables.
"""
from __future__ import annotations

import dataclasses

import flax
import jax
import jax.numpy as jnp
import numpy as np

from lct_jax import attention
from lct_jax.layout import apply_rope

# Logical axes of [B, slots, tokens, heads, head_dim]: a stream's tokens
# over 'context' (the video stream is sharded that way already).
QKV_AXES = ("batch", None, "length", "act_heads", None)


@flax.struct.dataclass
class StreamKV:
  """Pre-RoPE keys and values of both streams, per slot; with a leading
  layer axis when stacked by the layer scan or held in a cache."""
  vid_k: jax.Array      # [(layers,) B, V, T, H, Dh]
  vid_v: jax.Array
  txt_k: jax.Array      # [(layers,) B, G, L, H, Dh]
  txt_v: jax.Array

  def astype(self, dtype) -> StreamKV:
    return jax.tree.map(lambda x: x.astype(dtype), self)


@dataclasses.dataclass(frozen=True)
class Stream:
  """One stream's slots in a forward, [prefix ; own]."""
  groups_P: np.ndarray            # static group id of every slot
  valid_BxPxR: jax.Array          # key validity of every slot's tokens
  rope: tuple | None              # (cos, sin) [B, P, R, K]; None: no RoPE
  num_prefix: int                 # P0: slots read from the prefix

  @property
  def own_groups(self) -> np.ndarray:
    return self.groups_P[self.num_prefix:]

  def rotate(self, x, *, own: bool = True):
    """x rotated with the own slots' (or the prefix slots') RoPE tables."""
    if self.rope is None:
      return x
    p0 = self.num_prefix
    return apply_rope(x, *(t[:, p0:] if own else t[:, :p0] for t in self.rope))


@dataclasses.dataclass(frozen=True)
class BlockInputs:
  """What every block of one forward shares (closed over by the layer
  scan): per-group conditioning of the own slots, both streams' slots, and
  the attention settings."""
  silu_c_vid_BxVxD: jax.Array     # SiLU(conditioning) per own video slot
  silu_c_txt_BxGxD: jax.Array     # SiLU(conditioning) per own text slot
  vid: Stream
  txt: Stream
  causal: bool
  # `attend_segments`' settings from the model config: impl, block_q,
  # block_kv, context_strategy (no defaults here: one place).
  attention: dict


def joint_attention(vid_qkv, txt_qkv, ctx: BlockInputs,
                    prefix: StreamKV | None = None):
  """The own tokens' attention over [prefix ; own] keys of both streams.

  vid_qkv, txt_qkv: each stream's pre-RoPE (q, k, v), [B, V, T, H, Dh] and
  [B, G, L, H, Dh]. `prefix`: this layer's prefix K/V (pre-RoPE), needed
  iff the streams have prefix slots. Returns ((o_vid, o_txt), own K/V).
  """
  (q_v, k_v, v_v), (q_t, k_t, v_t) = vid_qkv, txt_qkv
  own = StreamKV(vid_k=k_v, vid_v=v_v, txt_k=k_t, txt_v=v_t)
  has_prefix = ctx.vid.num_prefix > 0 or ctx.txt.num_prefix > 0
  if has_prefix != (prefix is not None):
    raise ValueError(f"the streams have {ctx.vid.num_prefix} + "
                     f"{ctx.txt.num_prefix} prefix slots but prefix K/V "
                     f"{'were' if prefix is not None else 'were not'} given")

  def keys(stream: Stream, k, v, pk, pv, axes):
    k = stream.rotate(k)
    if pk is not None:
      cat = lambda a, b: jnp.concatenate([a, b], axis=1)
      k, v = cat(stream.rotate(pk, own=False), k), cat(pv, v)
    return attention.Keys(k, v, stream.groups_P, stream.valid_BxPxR, axes)

  p = prefix if prefix is not None else StreamKV(None, None, None, None)
  o_vid, o_txt = attention.attend_segments(
      [attention.Queries(ctx.vid.rotate(q_v), ctx.vid.own_groups, QKV_AXES),
       attention.Queries(ctx.txt.rotate(q_t), ctx.txt.own_groups)],
      [keys(ctx.vid, k_v, v_v, p.vid_k, p.vid_v, QKV_AXES),
       keys(ctx.txt, k_t, v_t, p.txt_k, p.txt_v, None)],
      causal=ctx.causal, **ctx.attention)
  return (o_vid, o_txt), own
