"""The KV cache of context-causal generation: its type, writing into it,
and the layout of a forward against it.

Under the context-causal mask (docs/design.md section 4) a group's tokens attend
only to groups <= their own, so the K/V of the global prompt and of history
shots, at every layer, do not depend on the shot being generated. They are
computed once (a history shot at its t_c, with its own modulation) and kept
in `KVCache`, an explicit pytree that the sampler passes in and gets back.
A new shot then runs only its own tokens through the one model forward
(`MMDiT.__call__(..., cache=...)`) against [cache ; own] keys.

Its slots are those of a scene with C + 1 shot slots whose last slot is the
new shot, in the model's order:
  video: [global dummy block (if any); slot 1..C]
  text:  [global prompt; slot 1..C]
so the forward's layout is `layout.build_layout` of that geometry, with the
slots outside the history pool given no frames and no text
(`cached_layout`): positions are those the full scene would give.
"""
from __future__ import annotations

import flax
import jax
import jax.numpy as jnp

from lct_jax.layout import SceneGeometry, TokenLayout, build_layout
from lct_jax.model.streams import StreamKV
from lct_jax.parallel import constrain

# Cache layout under a mesh, by logical axes of [layers, B, slots, tokens,
# heads, head_dim]: each slot's tokens (video and text) over 'context', heads
# over 'tensor'; the cache's memory per device falls as 1/(context x tensor)
# (BENCHMARKS.md, cache_memory).
KV_AXES = (None, "batch", None, "length", "act_heads", None)


def _constrain_kv(kv: StreamKV) -> StreamKV:
  return jax.tree.map(lambda x: constrain(x, KV_AXES), kv)


@flax.struct.dataclass
class KVCache:
  """Pre-RoPE K/V of the global group and C history shot slots.

  `kv` is stacked over every layer of the model, dual-stream then
  single-stream. Slot c holds one shot or nothing (`num_frames[:, c] == 0`).
  """
  kv: StreamKV              # video [layers, B, Vd + C, T, H, Dh], Vd = 1 with
                            #   scene.global_dummy_tokens, else 0;
                            #   text  [layers, B, 1 + C, L, H, Dh]
  text_len: jax.Array       # int32 [B, 1 + C]: group 0 the global prompt
  num_frames: jax.Array     # int32 [B, C]; 0 = empty slot
  # What built it (static: part of the treedef, not traced), so that a
  # cache is never read by a model of another shape (`check_model`).
  model_shape: tuple = flax.struct.field(pytree_node=False, default=())

  @property
  def capacity(self) -> int:
    return self.num_frames.shape[1]

  def check_model(self, model) -> None:
    """A clear error, naming each difference, when this cache was built
    by a model (an `MMDiT`) of another shape (`model_shape_of`)."""
    want = model_shape_of(model.config.model, model.geom)
    if tuple(self.model_shape) == want:
      return
    diff = [f"{k} {a} (cache) vs {b} (model)"
            for (k, a), (_, b) in zip(self.model_shape, want) if a != b]
    raise ValueError("this KV cache was built by another model: "
                     + ("; ".join(diff) or f"{self.model_shape} vs {want}"))

  def write(self, slot, kv: StreamKV, text_len_B, num_frames_B) -> KVCache:
    """A cache with one shot's K/V (each [layers, B, 1, T or L, H, Dh], the
    forward's `kv_out`) in slot `slot` (an int or a traced scalar: no
    recompilation per slot)."""
    put = lambda a, x, first: jax.lax.dynamic_update_slice_in_dim(
        a, x.astype(a.dtype), first + slot, 2)
    # Slot 0 follows the global group's slots: its dummy block's (Vd) in
    # video, its prompt in text.
    Vd = self.kv.vid_k.shape[2] - self.capacity
    first = StreamKV(vid_k=Vd, vid_v=Vd, txt_k=1, txt_v=1)
    return self.replace(
        kv=_constrain_kv(jax.tree.map(put, self.kv, kv, first)),
        text_len=jax.lax.dynamic_update_index_in_dim(
            self.text_len, jnp.asarray(text_len_B, jnp.int32), 1 + slot, 1),
        num_frames=jax.lax.dynamic_update_index_in_dim(
            self.num_frames, jnp.asarray(num_frames_B, jnp.int32), slot, 1))


def model_shape_of(model_config, geom: SceneGeometry) -> tuple:
  """(name, value) pairs that fix what a cache holds and how it is read:
  the layers of each block kind, heads, widths, and each slot's tokens."""
  m = model_config
  return (("depth", m.depth), ("num_single_layers", m.num_single_layers),
          ("width", m.width), ("num_heads", m.num_heads),
          ("head_dim", m.head_dim), ("tokens_per_slot", geom.tokens_per_slot),
          ("max_text_len", geom.max_text_len),
          ("global_dummy_tokens", bool(geom.global_dummy_tokens)),
          ("text_rope", bool(m.text_rope)))


def default_capacity(geom: SceneGeometry) -> int:
  """History slots of a cache for scenes of `geom`: all shots but the new."""
  return max(geom.max_shots - 1, 1)


def cached_layout(geom: SceneGeometry, cache: KVCache, pool_BxC,
                  text_len_BxN, num_frames_BxN, *, text_rope: bool
                  ) -> tuple[SceneGeometry, TokenLayout]:
  """(geometry, layout) of N new shots after the cache's slots: the scene
  of C + N shot slots in which the history slots outside `pool_BxC` (and
  empty ones) are absent shots."""
  use_BxC = jnp.asarray(pool_BxC, bool) & (cache.num_frames > 0)
  C, N = cache.capacity, num_frames_BxN.shape[1]
  geom = geom.with_shots(C + N)
  text_len_BxG = jnp.concatenate(
      [cache.text_len[:, :1], jnp.where(use_BxC, cache.text_len[:, 1:], 0),
       jnp.asarray(text_len_BxN, jnp.int32)], axis=1)
  frames_BxN = jnp.concatenate(
      [jnp.where(use_BxC, cache.num_frames, 0),
       jnp.asarray(num_frames_BxN, jnp.int32)], axis=1)
  return geom, build_layout(geom, text_len_BxG, frames_BxN,
                            text_rope=text_rope)


def init_cache(model, text_BxL, text_len_B, pooled_BxP=None, *,
               capacity: int, guidance_B=None) -> KVCache:
  """An empty cache holding the global group's K/V: the model's forward of
  the global prompt alone (a scene of no shots).

  `text_BxL`: the global prompt (token ids, or embeddings [B, L, E]).
  """
  if capacity < 1:
    raise ValueError(f"KV cache capacity must be >= 1 shot, got {capacity}")
  geom = model.geom
  B = text_BxL.shape[0]
  no_shots = jnp.zeros((B, 0, geom.frames, geom.height, geom.width,
                        geom.channels), jnp.float32)
  as_group = lambda x: None if x is None else x[:, None]
  _, kv = model(no_shots, jnp.zeros((B, 0), jnp.float32), text_BxL[:, None],
                jnp.asarray(text_len_B, jnp.int32)[:, None],
                jnp.zeros((B, 0), jnp.int32), as_group(pooled_BxP),
                guidance_B, kv_out=True)
  pad = lambda x: jnp.pad(x, [(0, 0), (0, 0), (0, capacity)] +
                          [(0, 0)] * (x.ndim - 3))
  return KVCache(
      kv=_constrain_kv(jax.tree.map(pad, kv)),
      text_len=jnp.pad(jnp.asarray(text_len_B, jnp.int32)[:, None],
                       ((0, 0), (0, capacity))),
      num_frames=jnp.zeros((B, capacity), jnp.int32),
      model_shape=model_shape_of(model.config.model, geom))
