"""Per-layer K/V cache of history shots for context-causal generation.

Under the context-causal mask (DESIGN.md section 2) a group's tokens attend
only to groups <= their own, so the K/V of history shots at every layer do
not depend on the shot being generated. They are computed once (at the
history timestep t_c, with the history's own modulation) and kept in an
explicit pytree, `KVCache`; each new shot then runs only its own tokens
(video + text of one group) against [cache ; own K, V]. The block math is
`DualStreamBlock.forward` with this module's attention supplied, so the
cached and the full forward share everything but the attention call; the
contract test (tests/test_kv_cache.py: cached == recomputed under the causal
mask) guards the rest.

Keys are cached *before* RoPE. Positions are laid out at use time over the
global group, the shots of the chosen history pool (in slot order) and the
new shot, with the same rule as `build_layout`; so any subset of the cache
can condition the next shot and the scene stays within the model's position
range however long the generation runs. When the pool is every earlier shot
in order, the layout, the key order and hence the numbers are those of the
full recomputation.

Everything keeps its slot shape ([..., slots, tokens, ...]) as the model's
video stream does: under a mesh the cache's video tokens are sharded over
'context' (and heads over 'tensor'), and the attention sequence is the
`striping` order of [video slots ; text slots], so forming it moves no
video data and the context strategies see every device holding a slice of
every shot. With one device the order is the plain concatenation.

Key order (that of `SceneGeometry` with C + 1 shot slots, n = 1):
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
from lct_jax.attention import context, striping
from lct_jax.layout import SceneGeometry, apply_rope, build_layout, rope_tables
from lct_jax.model.block import striped_attention
from lct_jax.model.embeddings import unpatchify
from lct_jax.model.prediction import to_velocity
from lct_jax.parallel import constrain


@flax.struct.dataclass
class KVCache:
  """Pre-RoPE keys and values of the global group and C history shot slots.

  Leading axes: [depth (layers), B]. Slot c holds one shot (T video tokens,
  L text tokens) or nothing (`num_frames[:, c] == 0`).
  """
  glob_vid_k: jax.Array     # [depth, B, Vd, T, H, Dh]; Vd = 1 with dummy
  glob_vid_v: jax.Array     #   tokens (scene.global_dummy_tokens), else 0
  glob_txt_k: jax.Array     # [depth, B, 1, L, H, Dh]
  glob_txt_v: jax.Array
  glob_text_len: jax.Array  # int32 [B]
  glob_pooled: jax.Array    # [B, P] the global prompt's pooled text (P = 0
                            #   without model.use_pooled_text)
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

  def write(self, slot, kv: tuple, text_len_B, num_frames_B) -> KVCache:
    """A cache with `kv` = (vid_k, vid_v, txt_k, txt_v), each
    [depth, B, 1, T or L, H, Dh] (`forward_shot`'s), in slot `slot` (an int
    or a traced scalar: no recompilation per slot)."""
    vk, vv, tk, tv = kv
    put = lambda a, x: _constrain_kv(
        jax.lax.dynamic_update_slice_in_dim(a, x, slot, 2))
    return self.replace(
        vid_k=put(self.vid_k, vk), vid_v=put(self.vid_v, vv),
        txt_k=put(self.txt_k, tk), txt_v=put(self.txt_v, tv),
        text_len=jax.lax.dynamic_update_index_in_dim(
            self.text_len, jnp.asarray(text_len_B, jnp.int32), slot, 1),
        num_frames=jax.lax.dynamic_update_index_in_dim(
            self.num_frames, jnp.asarray(num_frames_B, jnp.int32), slot, 1))


# Cache layout under a mesh, by logical axes of [depth, B, slots, tokens,
# heads, head_dim]: each slot's tokens (video and text) over 'context', heads
# over 'tensor'; the cache's memory per device falls as 1/(context x tensor)
# (BENCHMARKS.md, cache_memory).
KV_AXES = (None, "batch", None, "length", "act_heads", None)


def default_capacity(geom: SceneGeometry) -> int:
  """History slots of a cache for scenes of `geom`: all shots but the new."""
  return max(geom.max_shots - 1, 1)


def _constrain_kv(x_DxBxPxNxHxDh):
  return constrain(x_DxBxPxNxHxDh, KV_AXES)


def check_supported(model) -> None:
  if model.config.model.get("num_single_layers", 0) > 0:
    raise NotImplementedError(
        "the KV cache covers dual-stream blocks only; model.num_single_layers="
        f"{model.config.model.num_single_layers} > 0 is not supported by "
        "causal cached sampling (use --mode bidirectional_ar, which re-runs "
        "the history without a cache)")


def _cached_geometry(model, capacity: int) -> SceneGeometry:
  return dataclasses.replace(model.geom, max_shots=capacity + 1)


def _rope(x, rope):
  """apply_rope, or nothing for no rope / zero slots (the global group's
  absent dummy block)."""
  if rope is None or x.shape[1] == 0:
    return x
  return apply_rope(x, *rope)


def _slots(x_BxSxK, slots: int, run: int):
  """[B, S, ...] of whole runs -> [B, slots, run, ...]."""
  return x_BxSxK.reshape(x_BxSxK.shape[0], slots, run, *x_BxSxK.shape[2:])


def _block_with_context(blk, vid, txt, silu_c_vid, silu_c_txt, rope_vid,
                        rope_txt, ctx_vid_kv, ctx_txt_kv, mask, m, n):
  """`DualStreamBlock.forward` for own tokens that also attend to context
  keys/values (already rotated; video [B, Vc, T, H, Dh], text
  [B, Gc, L, H, Dh]). Returns (vid, txt, own pre-RoPE kv in slot shape).

  `mask` is over the striped sequences for `n` context devices.
  """
  own = []

  def attend(vid_qkv, txt_qkv):
    (q_v, k_v, v_v), (q_t, k_t, v_t) = vid_qkv, txt_qkv
    own.append((k_v, v_v, k_t, v_t))
    cat = lambda a, b: jnp.concatenate([a, b], axis=1)
    return striped_attention(
        (_rope(q_v, rope_vid), cat(ctx_vid_kv[0], _rope(k_v, rope_vid)),
         cat(ctx_vid_kv[1], v_v)),
        (_rope(q_t, rope_txt), cat(ctx_txt_kv[0], _rope(k_t, rope_txt)),
         cat(ctx_txt_kv[1], v_t)),
        mask, n, impl=m.attention_impl, block_q=m.block_q,
        block_kv=m.block_kv, context_strategy=m.context_strategy)

  vid, txt = blk.forward(vid, txt, silu_c_vid, silu_c_txt, attend)
  return vid, txt, own[0]


def _run_layers(model, vid, txt, silu_c_vid, silu_c_txt, rope_vid, rope_txt,
                ctx_rope_vid, ctx_rope_txt, ctx_layers, mask, n, collect_kv):
  """Scans the stacked blocks; ctx_layers: per-layer (vid k, vid v, txt k,
  txt v) of the context, pre-RoPE, slot-shaped, stacked on axis 0."""
  m = model.config.model
  graphdef, params = nnx.split(model.transformer_blocks)

  def body(carry, xs):
    vid, txt = carry
    layer_params, (cvk, cvv, ctk, ctv) = xs
    blk = nnx.merge(graphdef, layer_params)
    vid, txt, own = _block_with_context(
        blk, vid, txt, silu_c_vid, silu_c_txt, rope_vid, rope_txt,
        (_rope(cvk, ctx_rope_vid), cvv), (_rope(ctk, ctx_rope_txt), ctv),
        mask, m, n)
    # Float32 parameters with a bf16 compute dtype promote the block's
    # outputs; the carry keeps the dtype it came in with.
    vid = constrain(vid.astype(carry[0].dtype),
                    ("batch", None, "length", "act_embed"))
    return (vid, txt.astype(carry[1].dtype)), (own if collect_kv else None)

  (vid, txt), kv = jax.lax.scan(body, (vid, txt), (params, ctx_layers))
  return vid, txt, kv


def _tables(model, g1: SceneGeometry, layout):
  """RoPE (cos, sin) in slot shape: video [B, V1, T, K], text [B, G1, L, K]
  (None without text RoPE), for the cached geometry `g1`."""
  m = model.config.model
  cos, sin = rope_tables(layout.pos_BxSx3, m.rope_axes_dim, m.rope_theta)
  Sv, T, L = g1.video_len, g1.tokens_per_slot, g1.max_text_len
  vid = lambda x: constrain(_slots(x[:, :Sv], g1.num_video_slots, T),
                            ("batch", None, "length", None))
  txt = lambda x: _slots(x[:, Sv:], g1.num_groups, L)
  return ((vid(cos), vid(sin)),
          (txt(cos), txt(sin)) if m.text_rope else None)


def _pick(rope, sl):
  return None if rope is None else (rope[0][:, sl], rope[1][:, sl])


def _striped_keys(g1: SceneGeometry, layout, vid_slots: slice,
                  txt_slots: slice, n: int):
  """(kv_group [S'], kv_valid [B, S']) of the keys in `vid_slots` and
  `txt_slots` of the cached geometry, in striped order for n devices."""
  return (_striped_ids(g1, vid_slots, txt_slots, n),
          striping.stripe(_slot_parts(g1, layout.valid_BxS, vid_slots,
                                      txt_slots), n))


def _slot_parts(g1: SceneGeometry, x_BxS, vid_slots: slice,
                txt_slots: slice):
  """[video slots, text slots] of a per-token array of the geometry."""
  Sv = g1.video_len
  return [_slots(x_BxS[:, :Sv], g1.num_video_slots,
                 g1.tokens_per_slot)[:, vid_slots],
          _slots(x_BxS[:, Sv:], g1.num_groups, g1.max_text_len)[:, txt_slots]]


def _striped_ids(g1: SceneGeometry, vid_slots: slice, txt_slots: slice,
                 n: int) -> np.ndarray:
  """Static group ids [S'] of those slots, in striped order."""
  parts = _slot_parts(g1, g1.token_groups()[None], vid_slots, txt_slots)
  return striping.stripe(parts, n, edge=True)[0]


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
  n = context.mesh_axis_size(context.AXIS)
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
  rope_vid, rope_txt = _tables(model, g1, layout)
  Vd = 1 if geom.global_dummy_tokens else 0
  if Vd:
    dummy = model.x_embedder.proj(jnp.zeros((B, 1, T, geom.patch_dim), dtype))
  else:
    dummy = jnp.zeros((B, 0, T, m.width), dtype)
  kv_group, kv_valid = _striped_keys(g1, layout, slice(0, Vd),
                                     slice(0, 1), n)
  mask = attention.GroupMask(q_group=np.zeros_like(kv_group),
                             kv_group=kv_group, kv_valid=kv_valid,
                             causal=True)
  depth, H, Dh = m.depth, m.num_heads, m.head_dim
  empty = lambda r: jnp.zeros((depth, B, 0, r, H, Dh), dtype)
  _, _, kv = _run_layers(
      model, dummy, txt, silu_c[:, :Vd], silu_c, _pick(rope_vid, slice(0, Vd)),
      _pick(rope_txt, slice(0, 1)), None, None,
      (empty(T), empty(T), empty(L), empty(L)), mask, n, collect_kv=True)
  gvk, gvv, gtk, gtv = (_constrain_kv(x) for x in kv)
  C = capacity
  zeros = lambda r: _constrain_kv(jnp.zeros((depth, B, C, r, H, Dh), dtype))
  return KVCache(
      glob_vid_k=gvk, glob_vid_v=gvv, glob_txt_k=gtk, glob_txt_v=gtv,
      glob_text_len=jnp.asarray(text_len_B, jnp.int32),
      glob_pooled=(jnp.zeros((B, 0), dtype) if pooled is None
                   else pooled[:, 0]),
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
  (vid_k, vid_v, txt_k, txt_v) each [depth, B, 1, T or L, H, Dh], for
  `KVCache.write`.
  """
  check_supported(model)
  m, geom = model.config.model, model.geom
  C = cache.capacity
  n = context.mesh_axis_size(context.AXIS)
  dtype = model._dtype()  # pylint: disable=protected-access
  # Text and conditioning as for a scene [group 0, this shot]: the model's
  # per-group functions then see the shot at index 1 with its own t (the
  # token refiner, if any, needs it). Group 0's text is a placeholder; its
  # pooled vector is the cached global prompt's (pooled_text_with_global).
  two = lambda x: None if x is None else jnp.stack([x, x], axis=1)
  t_Bx1 = jnp.asarray(t_B, jnp.float32)[:, None]
  txt, pooled = model.embed_text(two(text_BxL), two(text_len_B),
                                 two(pooled_BxP), t_Bx1)
  txt = txt[:, 1:]                                      # [B, 1, L, D]
  if pooled is not None:    # group 0 is the global prompt's, as in a scene
    pooled = pooled.at[:, 0].set(cache.glob_pooled.astype(pooled.dtype))
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
  rope_vid, rope_txt = _tables(model, g1, layout)
  V1, G1 = g1.num_video_slots, g1.num_groups     # context: all but the last
  kv_group, kv_valid = _striped_keys(g1, layout, slice(0, V1),
                                     slice(0, G1), n)
  # The queries are the last slot of each stream: the new shot's group.
  q_group = _striped_ids(g1, slice(V1 - 1, V1), slice(G1 - 1, G1), n)
  mask = attention.GroupMask(q_group=q_group, kv_group=kv_group,
                             kv_valid=kv_valid, causal=True)
  cat = lambda a, b: jnp.concatenate([a, b], axis=2)
  ctx_layers = (cat(cache.glob_vid_k, cache.vid_k),
                cat(cache.glob_vid_v, cache.vid_v),
                cat(cache.glob_txt_k, cache.txt_k),
                cat(cache.glob_txt_v, cache.txt_v))
  vid = model.x_embedder(latents_BxFxHxWxC[:, None].astype(dtype), m.patch_t,
                         m.patch)                       # [B, 1, T, D]
  vid = constrain(vid, ("batch", None, "length", "act_embed"))
  vid, _, kv = _run_layers(
      model, vid, txt, silu_c, silu_c, _pick(rope_vid, slice(V1 - 1, V1)),
      _pick(rope_txt, slice(G1 - 1, G1)), _pick(rope_vid, slice(0, V1 - 1)),
      _pick(rope_txt, slice(0, G1 - 1)), ctx_layers, mask, n,
      collect_kv=collect_kv)
  out = model.final_layer(vid, silu_c)
  out = unpatchify(out, geom.grid, m.patch_t, m.patch)[:, 0]
  if collect_kv:
    kv = tuple(x.astype(dtype) for x in kv)
  return to_velocity(out, latents_BxFxHxWxC, t_B, m), kv
