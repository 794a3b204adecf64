"""The LCT MMDiT: a single-shot MMDiT that reads a whole scene.

Inputs are a scene batch at static shapes (docs/design.md section 2); the only
LCT-specific pieces are parameter-free: the interleaved 3D RoPE positions,
per-group timesteps (each group's conditioning drives all of its tokens), and
the group mask. Blocks are stacked (`nnx.vmap` at init) and run by one
`lax.scan`, so compile time does not grow with depth.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from lct_jax.layout import SceneGeometry, TokenLayout, build_layout, rope_tables
from lct_jax.model.block import DualStreamBlock
from lct_jax.model.kv_cache import KVCache, cached_layout
from lct_jax.model.embeddings import (MLPEmbedder, PatchEmbed, TokenEmbed,
                                      timestep_sinusoid, unpatchify,
                                      SINUSOID_DIM)
from lct_jax.model.layers import (AdaLNZero, layer_norm, linear, scan_stack,
                                  stack)
from lct_jax.model.prediction import to_velocity
from lct_jax.model.refiner import TokenRefiner, masked_mean
from lct_jax.model.single_block import SingleStreamBlock
from lct_jax.model.streams import BlockInputs, Stream, StreamKV
from lct_jax.parallel import constrain

# `model.text_mode`: caption token ids through a learned table, or
# precomputed text-encoder embeddings (`ContextEmbedder`).
TEXT_MODES = ("tokens", "embeddings")
# `model.compute_dtype`: activations' dtype (parameters stay float32).
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


class ContextEmbedder(nnx.Module):
  """Text -> width: learned tokens or given embeddings, then `proj_in`.

  With `num_refiner_layers > 0`, HunyuanVideo's token refiner follows
  `proj_in`, conditioned per group by its own `time_text_embed` (diffusers'
  `context_embedder.time_text_embed`: timestep + masked-mean text).
  """

  def __init__(self, m, *, rngs: nnx.Rngs):
    if m.text_mode == "tokens":
      self.token_embedder = TokenEmbed(m.vocab_size, m.text_embed_dim,
                                       rngs=rngs)
    self.proj_in = linear(m.text_embed_dim, m.width, (None, "embed"),
                          rngs=rngs)
    if m.num_refiner_layers:
      self.time_text_embed = TimeTextEmbed(m.width, m.text_embed_dim, False,
                                           rngs=rngs)
      self.token_refiner = TokenRefiner(m, rngs=rngs)


class TimeTextEmbed(nnx.Module):
  """c = timestep_embed(t) (+ text_embed(a pooled text vector of
  `text_dim`)) (+ guidance_embed(guidance)): the model's per-group c_g, and
  the token refiner's (diffusers' `context_embedder.time_text_embed`)."""

  def __init__(self, width: int, text_dim: int, guidance: bool, *,
               rngs: nnx.Rngs):
    self.timestep_embedder = MLPEmbedder(SINUSOID_DIM, width, rngs=rngs)
    if text_dim:
      self.text_embedder = MLPEmbedder(text_dim, width, rngs=rngs)
    if guidance:
      self.guidance_embedder = MLPEmbedder(SINUSOID_DIM, width, rngs=rngs)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """What the network is: the run config's model section and the scene
  geometry, frozen. It lives in the MMDiT's graphdef, which is the jit
  cache key of every jitted sampler and step, so it holds nothing of the
  run (train, optim, data, sample, mesh): changing those recompiles
  nothing."""
  model: ml_collections.FrozenConfigDict
  geom: SceneGeometry

  @classmethod
  def from_config(cls, config) -> ModelConfig:
    """From a run config, which the caller has validated
    (`configlib.validate`; `training.init_model` does)."""
    return cls(ml_collections.FrozenConfigDict(config.model),
               SceneGeometry.from_config(config))


class MMDiT(nnx.Module):
  """`MMDiT(config)`: a run config (its model and scene sections are
  used) or a `ModelConfig`."""

  def __init__(self, config, *, rngs: nnx.Rngs):
    if not isinstance(config, ModelConfig):
      config = ModelConfig.from_config(config)
    self.config = config
    m = config.model
    out_channels = m.out_channels or m.in_channels
    self.x_embedder = PatchEmbed(self.geom.patch_dim, m.width, rngs=rngs)
    self.context_embedder = ContextEmbedder(m, rngs=rngs)
    pooled_dim = m.text_embed_dim if m.text_mode == "tokens" else m.pooled_dim
    self.time_text_embed = TimeTextEmbed(
        m.width, pooled_dim if m.use_pooled_text else 0, m.guidance_embeds,
        rngs=rngs)

    block = lambda kind: lambda rngs: kind(
        m.width, m.num_heads, m.head_dim, m.mlp_ratio, rngs=rngs,
        zero_init=m.zero_init)
    self.transformer_blocks = stack(m.depth, block(DualStreamBlock), rngs)
    if m.num_single_layers:
      self.single_transformer_blocks = stack(
          m.num_single_layers, block(SingleStreamBlock), rngs)
    # `norm_out`: adaLN continuous, chunks (scale, shift).
    self.norm_out = AdaLNZero(m.width, rngs=rngs, zero=m.zero_init, chunks=2)
    self.proj_out = linear(
        m.width, out_channels * m.patch_t * m.patch ** 2, ("embed", None),
        rngs=rngs, zero=m.zero_init)

  @property
  def geom(self) -> SceneGeometry:
    return self.config.geom

  # --- conditioning -----------------------------------------------------------
  def pooled_text(self, text_BxGxL: jax.Array, text_len_BxG: jax.Array,
                  pooled_BxGxP: jax.Array | None) -> jax.Array | None:
    """Each group's own pooled text vector [B, G, P], or None without
    `model.use_pooled_text`: the given one, or in tokens mode the mean of
    the real tokens' embeddings (a stand-in for a CLIP-style vector)."""
    m = self.config.model
    if not m.use_pooled_text:
      return None
    if m.text_mode != "tokens":
      return pooled_BxGxP
    valid_BxGxL = jnp.arange(text_BxGxL.shape[-1]) < text_len_BxG[..., None]
    return masked_mean(self.context_embedder.token_embedder(text_BxGxL),
                       valid_BxGxL)

  def embed_text(self, text_BxGxL: jax.Array, text_len_BxG: jax.Array,
                 t_BxG: jax.Array | None = None) -> jax.Array:
    """-> text tokens [B, G, L, D] of these groups.

    `t_BxG` (each group's timestep, `group_timesteps`) is needed only by
    the token refiner.
    """
    m = self.config.model
    ce = self.context_embedder
    if m.text_mode == "tokens":
      emb_BxGxLxE = ce.token_embedder(text_BxGxL)
    else:
      emb_BxGxLxE = text_BxGxL
    emb_BxGxLxE = emb_BxGxLxE.astype(self._dtype())
    txt_BxGxLxD = ce.proj_in(emb_BxGxLxE)
    if m.num_refiner_layers:
      if t_BxG is None:
        raise ValueError("model.num_refiner_layers > 0: pass t_BxG")
      txt_BxGxLxD = self._refine(txt_BxGxLxD, emb_BxGxLxE, text_len_BxG,
                                 t_BxG)
    return txt_BxGxLxD

  def _refine(self, txt_BxGxLxD, emb_BxGxLxE, text_len_BxG, t_BxG):
    """Each group's prompt through the token refiner at the group's t."""
    ce = self.context_embedder
    B, G, L, D = txt_BxGxLxD.shape
    valid_NxL = (jnp.arange(L)[None] <
                 jnp.asarray(text_len_BxG).reshape(B * G, 1))
    pooled_NxE = masked_mean(emb_BxGxLxE.reshape(B * G, L, -1), valid_NxL)
    tte = ce.time_text_embed
    c_NxD = (self._embed_t(tte.timestep_embedder, t_BxG).reshape(B * G, D)
             + tte.text_embedder(pooled_NxE))
    out = ce.token_refiner(txt_BxGxLxD.reshape(B * G, L, D), c_NxD,
                           valid_NxL)
    return out.reshape(B, G, L, D)

  def group_timesteps(self, t_BxN: jax.Array) -> jax.Array:
    """[B, N] shot timesteps -> [B, G]: the global group at a fixed t."""
    B = t_BxN.shape[0]
    return jnp.concatenate(
        [jnp.full((B, 1), self.config.model.global_timestep, t_BxN.dtype),
         t_BxN], axis=1)

  def conditioning(self, t_BxG, pooled_BxGxP, guidance_B=None) -> jax.Array:
    """Per-group conditioning c [B, G, D] of these groups, from their
    timesteps and pooled text vectors."""
    m = self.config.model
    tte = self.time_text_embed
    c_BxGxD = self._embed_t(tte.timestep_embedder, t_BxG)
    if m.use_pooled_text:
      c_BxGxD = c_BxGxD + tte.text_embedder(pooled_BxGxP.astype(self._dtype()))
    if m.guidance_embeds:
      if guidance_B is None:
        raise ValueError("model.guidance_embeds is set: pass guidance_B")
      c_BxGxD = c_BxGxD + self._embed_t(tte.guidance_embedder,
                                        guidance_B)[:, None]
    return c_BxGxD

  def _embed_t(self, embedder, t):
    """embedder(sinusoid of t on the model's timestep scale)."""
    sinus = timestep_sinusoid(t * self.config.model.timestep_scale)
    return embedder(sinus.astype(self._dtype()))

  def _dtype(self):
    return jnp.dtype(self.config.model.compute_dtype)

  # --- the transformer over tokens --------------------------------------------
  def block_inputs(self, c_BxGxD: jax.Array, geom: SceneGeometry,
                   layout: TokenLayout, *, prefix_groups: int = 0
                   ) -> BlockInputs:
    """Inputs shared by every block: the own groups are those from
    `prefix_groups` on (their conditioning `c_BxGxD`); earlier groups are
    the prefix, read from a cache. `layout` is `geom`'s."""
    m = self.config.model
    B = c_BxGxD.shape[0]
    cos, sin = rope_tables(layout.pos_BxSx3, m.rope_axes_dim, m.rope_theta)
    Sv, V, T = geom.video_len, geom.num_video_slots, geom.tokens_per_slot
    G, L = geom.num_groups, geom.max_text_len
    as_vid = lambda x: constrain(
        x[:, :Sv].reshape(B, V, T, *x.shape[2:]),
        ("batch", None, "length") + (None,) * (x.ndim - 2))
    as_txt = lambda x: x[:, Sv:].reshape(B, G, L, *x.shape[2:])
    vid_groups = geom.video_slot_groups
    # Video slots of the prefix: those of its groups (the dummy block is
    # group 0's).
    pv = int(np.sum(vid_groups < prefix_groups))

    def stream(as_slots, groups_P, p0, rope):
      return Stream(groups_P, as_slots(layout.valid_BxS),
                    (as_slots(cos), as_slots(sin)) if rope else None, p0)

    silu_c = jax.nn.silu(c_BxGxD)
    return BlockInputs(
        silu_c_vid_BxVxD=silu_c[:, vid_groups[pv:] - prefix_groups],
        silu_c_txt_BxGxD=silu_c,
        vid=stream(as_vid, vid_groups, pv, True),
        txt=stream(as_txt, np.arange(G, dtype=np.int32), prefix_groups,
                   m.text_rope),
        causal=m.attention_mask == "context_causal",
        attention=dict(impl=m.attention_impl, block_q=m.block_q,
                       block_kv=m.block_kv,
                       context_strategy=m.context_strategy))

  def run_blocks(self, vid_BxVxTxD, txt_BxGxLxD, ctx: BlockInputs,
                 prefix: StreamKV | None = None, *, kv_out: bool = False):
    """All blocks -> (video, text, own K/V of every layer or None): one
    scan over the stacked dual-stream parameters, then (HunyuanVideo) one
    over the single-stream ones. `prefix`: the cache's K/V of every layer,
    in the same order."""
    m = self.config.model
    stacks = [(self.transformer_blocks, m.depth)]
    if m.num_single_layers:
      stacks.append((self.single_transformer_blocks, m.num_single_layers))
    carry, kvs, first = (vid_BxVxTxD, txt_BxGxLxD), [], 0
    for blocks, depth in stacks:
      layers = (None if prefix is None else jax.tree.map(
          lambda x, a=first, b=first + depth: x[a:b], prefix))
      carry, kv = self._scan(blocks, carry, ctx, layers, kv_out)
      kvs.append(kv)
      first += depth
    kv = (jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *kvs)
          if kv_out else None)
    return carry[0], carry[1], kv

  def _scan(self, stacked_blocks, carry, ctx: BlockInputs, prefix_layers,
            kv_out: bool):
    """One scan over (layer parameters, layer slice of the prefix) with the
    configured remat policy."""

    def body(block, carry, prefix):
      vid, txt, own = block(*carry, ctx, prefix)
      # Float32 parameters with a bf16 compute dtype promote the block's
      # outputs; the carry keeps the dtype it came in with.
      vid = constrain(vid.astype(carry[0].dtype),
                      ("batch", None, "length", "act_embed"))
      txt = constrain(txt.astype(carry[1].dtype),
                      ("batch", None, None, "act_embed"))
      return (vid, txt), (own.astype(carry[0].dtype) if kv_out else None)

    return scan_stack(stacked_blocks, body, carry, prefix_layers,
                      remat_policy=self.config.model.remat_policy)

  def final_layer(self, vid_BxVxTxD, silu_c_vid_BxVxD) -> jax.Array:
    scale, shift = self.norm_out(silu_c_vid_BxVxD)
    x = layer_norm(vid_BxVxTxD) * (1 + scale[:, :, None]) + shift[:, :, None]
    return self.proj_out(x)

  # --- the one forward ----------------------------------------------------------
  def __call__(self, latents_BxNxFxHxWxC: jax.Array, t_BxN: jax.Array,
               text_BxGxL: jax.Array, text_len_BxG: jax.Array,
               num_frames_BxN: jax.Array, pooled_BxGxP: jax.Array | None = None,
               guidance_B: jax.Array | None = None, *,
               cache: KVCache | None = None, pool_BxC: jax.Array | None = None,
               kv_out: bool = False):
    """Velocity for every given shot, [B, N, F, H, W, C_out]; with
    `kv_out`, also the own tokens' pre-RoPE K/V of every layer
    (`StreamKV`, [layers, B, slots, tokens, H, Dh], for `KVCache`).

    Without `cache`: a scene of N shots (N may be 0: the global prompt
    alone, the cache's first entry); the text holds G = N + 1 groups,
    group 0 the global prompt.
    With `cache`: N new shots after the cache's history slots that
    `pool_BxC` (bool [B, C], default all) selects; the text holds the N
    shots' groups only (the global prompt is in the cache). Needs
    `model.attention_mask = 'context_causal'`, under which the history
    does not depend on the new shots.

    `text_BxGxL` holds token ids (tokens mode) or embeddings [B, G, L, E]
    (embeddings mode). Outputs at padded frames and shots are meaningless.
    """
    m = self.config.model
    dtype = self._dtype()
    B, N = latents_BxNxFxHxWxC.shape[:2]
    G = text_BxGxL.shape[1]
    if cache is None:
      if G != N + 1:
        raise ValueError(f"a scene of {N} shots needs {N + 1} text groups "
                         f"(global prompt first), got {G}")
      geom = self.geom.with_shots(N)
      layout = build_layout(geom, text_len_BxG, num_frames_BxN,
                            text_rope=m.text_rope)
      t_BxG, first_group = self.group_timesteps(t_BxN), 0
    else:
      if m.attention_mask != "context_causal":
        raise ValueError("a forward against a KV cache needs "
                         "model.attention_mask='context_causal', got "
                         f"{m.attention_mask!r}")
      cache.check_model(self)
      if G != N:
        raise ValueError(f"{N} new shots against a KV cache need {N} text "
                         f"groups (theirs; the global prompt is cached), "
                         f"got {G}")
      if pool_BxC is None:
        pool_BxC = jnp.ones((B, cache.capacity), bool)
      geom, layout = cached_layout(self.geom, cache, pool_BxC, text_len_BxG,
                                   num_frames_BxN, text_rope=m.text_rope)
      t_BxG, first_group = t_BxN, 1 + cache.capacity
    txt = self.embed_text(text_BxGxL, text_len_BxG, t_BxG)
    pooled = self.pooled_text(text_BxGxL, text_len_BxG, pooled_BxGxP)
    c_BxGxD = self.conditioning(t_BxG, pooled, guidance_B)
    ctx = self.block_inputs(c_BxGxD, geom, layout, prefix_groups=first_group)

    vid = self.x_embedder(latents_BxNxFxHxWxC.astype(dtype), m.patch_t,
                          m.patch)
    # The dummy block (a zero, clean latent frame embedded like video) is
    # the global group's: own tokens of a scene, cached for a new shot.
    dummy = cache is None and geom.global_dummy_tokens
    if dummy:
      T = vid.shape[2]
      vid = jnp.concatenate(
          [self.x_embedder.proj(jnp.zeros((B, 1, T, geom.patch_dim), dtype)),
           vid], axis=1)
    vid = constrain(vid, ("batch", None, "length", "act_embed"))
    vid, _, kv = self.run_blocks(
        vid, txt, ctx, None if cache is None else cache.kv, kv_out=kv_out)
    silu_c_vid = ctx.silu_c_vid_BxVxD
    if dummy:
      vid, silu_c_vid = vid[:, 1:], silu_c_vid[:, 1:]
    out = self.final_layer(vid, silu_c_vid)
    out = unpatchify(out, geom.grid, m.patch_t, m.patch)
    v = to_velocity(out, latents_BxNxFxHxWxC, t_BxN, m)
    return (v, kv) if kv_out else v
