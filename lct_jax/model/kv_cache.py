"""Per-layer K/V cache of history shots for context-causal generation.

Under the context-causal mask (DESIGN.md section 2) a group's tokens attend
only to groups <= their own, so the K/V of history shots at every layer do
not depend on the shot being generated. They are computed once (at the
history timestep t_c, with the history's own modulation) and kept in an
explicit pytree, `KVCache`; each new shot then runs only its own tokens
(video + text of one group) against [cache ; own K, V]. This module adds that
path next to `MMDiT.__call__` without touching it: it reuses the model's
submodules and repeats the dual-stream block math, so the contract test
(tests/test_kv_cache.py: cached == recomputed under the causal mask) guards
the two against drifting apart.

Keys are cached *before* RoPE. Positions are laid out at use time over the
global group, the shots of the chosen history pool (in slot order) and the
new shot, with the same rule as `build_layout`; so any subset of the cache
can condition the next shot and the scene stays within the model's position
range however long the generation runs. When the pool is every earlier shot
in order, the layout, the key order and hence the numbers are those of the
full recomputation.

Token order of the keys (that of `SceneGeometry` with C + 1 shot slots):
  video: [global dummy block (if any); slot 1..C; new shot]
  text:  [global prompt; slot 1..C; new shot]
"""
from __future__ import annotations

import dataclasses

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lct_jax import attention
from lct_jax.layout import SceneGeometry, apply_rope, build_layout, rope_tables
from lct_jax.model.embeddings import unpatchify


@flax.struct.dataclass
class KVCache:
  """Pre-RoPE keys and values of the global group and C history shot slots.

  Leading axes: [depth (layers), B]. Slot c holds one shot (T video tokens,
  L text tokens) or nothing (`num_frames[:, c] == 0`).
  """
  glob_vid_k: jax.Array     # [depth, B, Td, H, Dh]; Td = T with dummy tokens
  glob_vid_v: jax.Array     #   (model's scene.global_dummy_tokens), else 0
  glob_txt_k: jax.Array     # [depth, B, L, H, Dh]
  glob_txt_v: jax.Array
  glob_text_len: jax.Array  # int32 [B]
  vid_k: jax.Array          # [depth, B, C, T, H, Dh]
  vid_v: jax.Array
  txt_k: jax.Array          # [depth, B, C, L, H, Dh]
  txt_v: jax.Array
  text_len: jax.Array       # int32 [B, C]
  num_frames: jax.Array     # int32 [B, C]; 0 = empty slot

  @property
  def capacity(self) -> int:
    return self.vid_k.shape[2]

  def filled(self) -> jax.Array:
    """bool [B, C]: slots holding a shot."""
    return self.num_frames > 0

  def write(self, slot, kv: tuple, text_len_B, num_frames_B) -> "KVCache":
    """A cache with `kv` = (vid_k, vid_v, txt_k, txt_v), each [depth, B, ...],
    in slot `slot` (an int or a traced scalar: no recompilation per slot)."""
    vk, vv, tk, tv = kv
    put = lambda a, x: jax.lax.dynamic_update_index_in_dim(a, x, slot, 2)
    return self.replace(
        vid_k=put(self.vid_k, vk), vid_v=put(self.vid_v, vv),
        txt_k=put(self.txt_k, tk), txt_v=put(self.txt_v, tv),
        text_len=jax.lax.dynamic_update_index_in_dim(
            self.text_len, jnp.asarray(text_len_B, jnp.int32), slot, 1),
        num_frames=jax.lax.dynamic_update_index_in_dim(
            self.num_frames, jnp.asarray(num_frames_B, jnp.int32), slot, 1))


def check_supported(model) -> None:
  if model.config.model.get("num_single_layers", 0) > 0:
    raise NotImplementedError(
        "the KV cache covers dual-stream blocks only; model.num_single_layers="
        f"{model.config.model.num_single_layers} > 0 is not supported by "
        "causal cached sampling (use --mode bidirectional_ar, which re-runs "
        "the history without a cache)")


def _cached_geometry(model, capacity: int) -> SceneGeometry:
  return dataclasses.replace(model.geom, max_shots=capacity + 1)


def _rope(x_BxSxHxD, rope):
  """apply_rope, or nothing for no rope / zero tokens (the global group's
  absent dummy block: apply_rope cannot reshape an empty array)."""
  if rope is None or x_BxSxHxD.shape[1] == 0:
    return x_BxSxHxD
  return apply_rope(x_BxSxHxD, *rope)


def _block_with_context(blk, vid, txt, silu_c_vid, silu_c_txt, rope_vid,
                        rope_txt, ctx_vid_kv, ctx_txt_kv, mask, impl, bq, bkv):
  """`DualStreamBlock.forward` for own tokens that also attend to context
  keys/values (already rotated). Returns (vid, txt, own pre-RoPE kv)."""
  B, V, T, _ = vid.shape
  G, L = txt.shape[1:3]
  own = []

  def attend(vid_qkv, txt_qkv):
    # Flat token axes: RoPE tables and cached keys are [B, S, ...].
    flat_v = lambda x: x.reshape(B, V * T, *x.shape[3:])
    flat_t = lambda x: x.reshape(B, G * L, *x.shape[3:])
    q_v, k_v, v_v = map(flat_v, vid_qkv)
    q_t, k_t, v_t = map(flat_t, txt_qkv)
    own.append((k_v, v_v, k_t, v_t))
    q_v, k_v_rot = _rope(q_v, rope_vid), _rope(k_v, rope_vid)
    q_t, k_t_rot = _rope(q_t, rope_txt), _rope(k_t, rope_txt)
    cat = lambda *xs: jnp.concatenate(xs, axis=1)
    q = cat(q_v, q_t)
    k = cat(ctx_vid_kv[0], k_v_rot, ctx_txt_kv[0], k_t_rot)
    v = cat(ctx_vid_kv[1], v_v, ctx_txt_kv[1], v_t)
    o = attention.attend(q, k, v, mask, impl=impl, block_q=bq, block_kv=bkv)
    return (o[:, :V * T].reshape(B, V, T, *o.shape[2:]),
            o[:, V * T:].reshape(B, G, L, *o.shape[2:]))

  vid, txt = blk.forward(vid, txt, silu_c_vid, silu_c_txt, attend)
  return vid, txt, own[0]


def _run_layers(model, vid, txt, silu_c_vid, silu_c_txt, rope_vid, rope_txt,
                ctx_rope_vid, ctx_rope_txt, ctx_layers, mask, collect_kv):
  """Scans the stacked blocks; ctx_layers: per-layer (vid k, vid v, txt k,
  txt v) of the context, pre-RoPE, stacked on axis 0."""
  m = model.config.model
  graphdef, params = nnx.split(model.transformer_blocks)

  def body(carry, xs):
    vid, txt = carry
    layer_params, (cvk, cvv, ctk, ctv) = xs
    blk = nnx.merge(graphdef, layer_params)
    vid, txt, own = _block_with_context(
        blk, vid, txt, silu_c_vid, silu_c_txt, rope_vid, rope_txt,
        (_rope(cvk, ctx_rope_vid), cvv), (_rope(ctk, ctx_rope_txt), ctv),
        mask, m.attention_impl, m.block_q, m.block_kv)
    return (vid, txt), (own if collect_kv else None)

  (vid, txt), kv = jax.lax.scan(body, (vid, txt), (params, ctx_layers))
  return vid, txt, kv


def _text_rope(model, cos, sin, sl):
  return (cos[:, sl], sin[:, sl]) if model.config.model.text_rope else None


def init_cache(model, text_BxL, text_len_B, pooled_BxP=None, *,
               capacity: int, guidance_B=None) -> KVCache:
  """An empty cache holding the global group's K/V (computed once here).

  `text_BxL`: the global prompt (token ids, or embeddings [B, L, E]).
  """
  check_supported(model)
  m, geom = model.config.model, model.geom
  if capacity < 1:
    raise ValueError(f"KV cache capacity must be >= 1 shot, got {capacity}")
  B, L, T = text_BxL.shape[0], geom.max_text_len, geom.tokens_per_slot
  dtype = model._dtype()  # pylint: disable=protected-access
  # embed_text() / conditioning() prepend group 0 at the global timestep:
  # pass no shots.
  no_shots = jnp.zeros((B, 0), jnp.float32)
  txt, pooled = model.embed_text(text_BxL[:, None], text_len_B[:, None],
                                 None if pooled_BxP is None
                                 else pooled_BxP[:, None], no_shots)
  c_BxGxD = model.conditioning(no_shots, pooled, guidance_B)
  silu_c = jax.nn.silu(c_BxGxD)                         # [B, 1, D]
  g1 = _cached_geometry(model, capacity)
  # Only group 0 is present: the other groups are empty (no advance).
  text_len_BxG = jnp.pad(jnp.asarray(text_len_B, jnp.int32)[:, None],
                         ((0, 0), (0, 1 + capacity)))
  layout = build_layout(g1, text_len_BxG,
                        jnp.zeros((B, 1 + capacity), jnp.int32),
                        text_rope=m.text_rope)
  cos, sin = rope_tables(layout.pos_BxSx3, m.rope_axes_dim, m.rope_theta)
  Td = T if geom.global_dummy_tokens else 0
  Sv = g1.video_len
  if Td:
    dummy = model.x_embedder.proj(jnp.zeros((B, 1, T, geom.patch_dim), dtype))
  else:
    dummy = jnp.zeros((B, 0, T, m.width), dtype)
  own_idx = np.concatenate([np.arange(Td), Sv + np.arange(L)])
  mask = attention.GroupMask(
      q_group=np.zeros(Td + L, np.int32), kv_group=np.zeros(Td + L, np.int32),
      kv_valid=layout.valid_BxS[:, own_idx], causal=True)
  depth, H, Dh = m.depth, m.num_heads, m.head_dim
  empty = jnp.zeros((depth, B, 0, H, Dh), dtype)
  _, _, kv = _run_layers(
      model, dummy, txt, silu_c[:, :(1 if Td else 0)], silu_c,
      (cos[:, :Td], sin[:, :Td]),
      _text_rope(model, cos, sin, slice(Sv, Sv + L)),
      None, None, (empty, empty, empty, empty), mask, collect_kv=True)
  gvk, gvv, gtk, gtv = kv
  C = capacity
  zeros = lambda n: jnp.zeros((depth, B, C, n, H, Dh), dtype)
  return KVCache(
      glob_vid_k=gvk, glob_vid_v=gvv, glob_txt_k=gtk, glob_txt_v=gtv,
      glob_text_len=jnp.asarray(text_len_B, jnp.int32),
      vid_k=zeros(T), vid_v=zeros(T), txt_k=zeros(L), txt_v=zeros(L),
      text_len=jnp.zeros((B, C), jnp.int32),
      num_frames=jnp.zeros((B, C), jnp.int32))


def forward_shot(model, cache: KVCache, pool_BxC, latents_BxFxHxWxC, t_B,
                 text_BxL, text_len_B, num_frames_B, pooled_BxP=None,
                 guidance_B=None, *, collect_kv: bool = False):
  """One new shot against the cached history -> (velocity, kv or None).

  Computes only the new shot's tokens. `pool_BxC` (bool) picks the cache
  slots that condition it (the history pool; empty slots are ignored).
  With `collect_kv`, also returns the shot's own pre-RoPE K/V per layer,
  (vid_k, vid_v, txt_k, txt_v) each [depth, B, ...], for `KVCache.write`.
  """
  check_supported(model)
  m, geom = model.config.model, model.geom
  C = cache.capacity
  B, L, T = latents_BxFxHxWxC.shape[0], geom.max_text_len, geom.tokens_per_slot
  dtype = model._dtype()  # pylint: disable=protected-access
  # Text and conditioning as for a scene [group 0, this shot]: the model's
  # per-group functions then see the shot at index 1 with its own t (the
  # token refiner, if any, needs it). Group 0's entries are placeholders.
  two = lambda x: None if x is None else jnp.stack([x, x], axis=1)
  t_Bx1 = jnp.asarray(t_B, jnp.float32)[:, None]
  txt, pooled = model.embed_text(two(text_BxL), two(text_len_B),
                                 two(pooled_BxP), t_Bx1)
  txt = txt[:, 1:]                                      # [B, 1, L, D]
  c_BxGxD = model.conditioning(t_Bx1, pooled, guidance_B)
  silu_c = jax.nn.silu(c_BxGxD[:, 1:])                  # [B, 1, D]

  use_BxC = jnp.asarray(pool_BxC, bool) & cache.filled()
  g1 = _cached_geometry(model, C)
  text_len_BxG = jnp.concatenate(
      [cache.glob_text_len[:, None], jnp.where(use_BxC, cache.text_len, 0),
       jnp.asarray(text_len_B, jnp.int32)[:, None]], axis=1)
  frames_BxN = jnp.concatenate(
      [jnp.where(use_BxC, cache.num_frames, 0),
       jnp.asarray(num_frames_B, jnp.int32)[:, None]], axis=1)
  layout = build_layout(g1, text_len_BxG, frames_BxN, text_rope=m.text_rope)
  cos, sin = rope_tables(layout.pos_BxSx3, m.rope_axes_dim, m.rope_theta)
  Sv = g1.video_len
  ctx_v = slice(0, Sv - T)                 # dummy + C slots of video
  ctx_t = slice(Sv, Sv + (1 + C) * L)      # global + C slots of text
  own_v, own_t = slice(Sv - T, Sv), slice(g1.seq_len - L, g1.seq_len)
  groups = g1.token_groups()
  mask = attention.GroupMask(
      q_group=np.full(T + L, C + 1, np.int32), kv_group=groups,
      kv_valid=layout.valid_BxS, causal=True)

  def flat(x):      # [depth, B, C, n, H, Dh] -> [depth, B, C * n, H, Dh]
    return x.reshape(x.shape[0], B, -1, *x.shape[-2:])
  ctx_layers = (
      jnp.concatenate([cache.glob_vid_k, flat(cache.vid_k)], axis=2),
      jnp.concatenate([cache.glob_vid_v, flat(cache.vid_v)], axis=2),
      jnp.concatenate([cache.glob_txt_k, flat(cache.txt_k)], axis=2),
      jnp.concatenate([cache.glob_txt_v, flat(cache.txt_v)], axis=2))
  vid = model.x_embedder(latents_BxFxHxWxC[:, None].astype(dtype), m.patch_t,
                         m.patch)                       # [B, 1, T, D]
  vid, _, kv = _run_layers(
      model, vid, txt, silu_c, silu_c, (cos[:, own_v], sin[:, own_v]),
      _text_rope(model, cos, sin, own_t), (cos[:, ctx_v], sin[:, ctx_v]),
      _text_rope(model, cos, sin, ctx_t), ctx_layers, mask,
      collect_kv=collect_kv)
  out = model.final_layer(vid, silu_c)
  v = unpatchify(out, geom.grid, m.patch_t, m.patch)[:, 0]
  if collect_kv:
    # Own text K/V come as [depth, B, L, ...]; video as [depth, B, T, ...].
    kv = tuple(x.astype(dtype) for x in kv)
  return v.astype(jnp.float32), kv
