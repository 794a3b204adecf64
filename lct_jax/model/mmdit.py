"""The LCT MMDiT: a single-shot MMDiT that reads a whole scene.

Inputs are a scene batch at static shapes (DESIGN.md section 2); the only
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
from flax import nnx

from lct_jax import attention
from lct_jax.attention import context, striping
from lct_jax import configlib
from lct_jax.layout import SceneGeometry, TokenLayout, build_layout, rope_tables
from lct_jax.model.block import BlockInputs, DualStreamBlock
from lct_jax.model.embeddings import (MLPEmbedder, PatchEmbed, TokenEmbed,
                                      timestep_sinusoid, unpatchify,
                                      SINUSOID_DIM)
from lct_jax.model.layers import layer_norm, linear
from lct_jax.model.prediction import to_velocity
from lct_jax.model.refiner import TokenRefiner, masked_mean
from lct_jax.model.remat import remat
from lct_jax.model.single_block import SingleStreamBlock
from lct_jax.parallel import constrain


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
      self.time_text_embed = RefinerEmbed(m, rngs=rngs)
      self.token_refiner = TokenRefiner(m, rngs=rngs)


class RefinerEmbed(nnx.Module):
  """The refiner's c = timestep_embed(t_g) + text_embed(mean of raw text)."""

  def __init__(self, m, *, rngs: nnx.Rngs):
    self.timestep_embedder = MLPEmbedder(SINUSOID_DIM, m.width, rngs=rngs)
    self.text_embedder = MLPEmbedder(m.text_embed_dim, m.width, rngs=rngs)


class TimeTextEmbed(nnx.Module):
  """c_g = timestep_embed(t_g) (+ pooled text of g) (+ guidance)."""

  def __init__(self, m, *, rngs: nnx.Rngs):
    self.timestep_embedder = MLPEmbedder(SINUSOID_DIM, m.width, rngs=rngs)
    if m.use_pooled_text:
      pooled_dim = (m.text_embed_dim if m.text_mode == "tokens"
                    else m.pooled_dim)
      self.text_embedder = MLPEmbedder(pooled_dim, m.width, rngs=rngs)
    if m.guidance_embeds:
      self.guidance_embedder = MLPEmbedder(SINUSOID_DIM, m.width, rngs=rngs)


class FinalLayer(nnx.Module):
  """`norm_out` (adaLN continuous: chunks (scale, shift)) and `proj_out`."""

  def __init__(self, width: int, *, rngs, zero: bool):
    self.linear = linear(width, 2 * width, ("embed", "modulation"),
                         rngs=rngs, zero=zero)


def with_global_pooled(pooled_BxGxP: jax.Array) -> jax.Array:
  """Shot groups' pooled text plus the global group's (group 0).

  In a single-shot model the one caption describes the whole video and its
  pooled vector drives every adaLN; a scene splits that caption into the
  global prompt and shot prompts, and without this the global prompt (the
  identity and environment) reaches the video only through attention,
  where its few keys are diluted by every shot's tokens. A summed vector
  keeps an empty global prompt (single-shot examples) a no-op. On the
  synthetic demo it measured no gain (BENCHMARKS.md, session of
  2026-12-04), so it is off by default.
  """
  return pooled_BxGxP.at[:, 1:].add(pooled_BxGxP[:, :1])


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
    """From a run config (validated here: the model section's checks read
    the scene too)."""
    configlib.validate(config)
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
    self.time_text_embed = TimeTextEmbed(m, rngs=rngs)

    @nnx.split_rngs(splits=m.depth)
    @nnx.vmap(in_axes=(0,), out_axes=0,
              transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make_blocks(rngs):
      return DualStreamBlock(m.width, m.num_heads, m.head_dim, m.mlp_ratio,
                             rngs=rngs, zero_init=m.zero_init)

    self.transformer_blocks = make_blocks(rngs)
    if m.num_single_layers:

      @nnx.split_rngs(splits=m.num_single_layers)
      @nnx.vmap(in_axes=(0,), out_axes=0,
                transform_metadata={nnx.PARTITION_NAME: "layers"})
      def make_single_blocks(rngs):
        return SingleStreamBlock(m.width, m.num_heads, m.head_dim,
                                 m.mlp_ratio, rngs=rngs,
                                 zero_init=m.zero_init)

      self.single_transformer_blocks = make_single_blocks(rngs)
    self.norm_out = FinalLayer(m.width, rngs=rngs, zero=m.zero_init)
    self.proj_out = linear(
        m.width, out_channels * m.patch_t * m.patch ** 2, ("embed", None),
        rngs=rngs, zero=m.zero_init)

  @property
  def geom(self) -> SceneGeometry:
    return self.config.geom

  # --- conditioning -----------------------------------------------------------
  def embed_text(self, text_BxGxL: jax.Array, text_len_BxG: jax.Array,
                 pooled_BxGxP: jax.Array | None,
                 t_BxN: jax.Array | None = None):
    """-> (text tokens [B, G, L, D], pooled vector or None).

    `t_BxN` (per-shot timesteps) is needed only by the token refiner.
    """
    m = self.config.model
    ce = self.context_embedder
    if m.text_mode == "tokens":
      emb_BxGxLxE = ce.token_embedder(text_BxGxL)
      if m.use_pooled_text:
        # Mean over the real tokens stands in for a CLIP-style pooled vector.
        valid = (jnp.arange(text_BxGxL.shape[-1]) < text_len_BxG[..., None])
        w = valid.astype(emb_BxGxLxE.dtype)[..., None]
        pooled_BxGxP = (jnp.sum(emb_BxGxLxE * w, axis=2)
                        / jnp.maximum(jnp.sum(w, axis=2), 1.0))
    else:
      emb_BxGxLxE = text_BxGxL
    emb_BxGxLxE = emb_BxGxLxE.astype(self._dtype())
    txt_BxGxLxD = ce.proj_in(emb_BxGxLxE)
    if m.num_refiner_layers:
      if t_BxN is None:
        raise ValueError("model.num_refiner_layers > 0: pass t_BxN")
      txt_BxGxLxD = self._refine(txt_BxGxLxD, emb_BxGxLxE, text_len_BxG,
                                 t_BxN)
    return txt_BxGxLxD, (pooled_BxGxP if m.use_pooled_text else None)

  def _refine(self, txt_BxGxLxD, emb_BxGxLxE, text_len_BxG, t_BxN):
    """Each group's prompt through the token refiner at the group's t."""
    m, ce = self.config.model, self.context_embedder
    B, G, L, D = txt_BxGxLxD.shape
    valid_NxL = (jnp.arange(L)[None] <
                 jnp.asarray(text_len_BxG).reshape(B * G, 1))
    pooled_NxE = masked_mean(emb_BxGxLxE.reshape(B * G, L, -1), valid_NxL)
    sinus = timestep_sinusoid(self.group_timesteps(t_BxN) * m.timestep_scale)
    tte = ce.time_text_embed
    c_NxD = (tte.timestep_embedder(sinus.astype(self._dtype()))
             .reshape(B * G, D) + tte.text_embedder(pooled_NxE))
    out = ce.token_refiner(txt_BxGxLxD.reshape(B * G, L, D), c_NxD,
                           valid_NxL)
    return out.reshape(B, G, L, D)

  def group_timesteps(self, t_BxN: jax.Array) -> jax.Array:
    """[B, N] shot timesteps -> [B, G]: the global group at a fixed t."""
    B = t_BxN.shape[0]
    return jnp.concatenate(
        [jnp.full((B, 1), self.config.model.global_timestep, t_BxN.dtype),
         t_BxN], axis=1)

  def conditioning(self, t_BxN, pooled_BxGxP, guidance_B=None) -> jax.Array:
    """Per-group conditioning c [B, G, D]; group 0 (global) at a fixed t.

    `pooled_BxGxP` is each group's own pooled text (`embed_text`'s), group
    0 the global prompt's.
    """
    m = self.config.model
    t_BxG = self.group_timesteps(t_BxN)
    tte = self.time_text_embed
    sinus = timestep_sinusoid(t_BxG * m.timestep_scale)
    c_BxGxD = tte.timestep_embedder(sinus.astype(self._dtype()))
    if m.use_pooled_text:
      if m.pooled_text_with_global:
        pooled_BxGxP = with_global_pooled(pooled_BxGxP)
      c_BxGxD = c_BxGxD + tte.text_embedder(pooled_BxGxP.astype(self._dtype()))
    if m.guidance_embeds:
      if guidance_B is None:
        raise ValueError("model.guidance_embeds is set: pass guidance_B")
      g = tte.guidance_embedder(
          timestep_sinusoid(guidance_B * m.timestep_scale).astype(self._dtype()))
      c_BxGxD = c_BxGxD + g[:, None]
    return c_BxGxD

  def _dtype(self):
    return jnp.dtype(self.config.model.compute_dtype)

  # --- the transformer over tokens --------------------------------------------
  def block_inputs(self, c_BxGxD: jax.Array, layout: TokenLayout
                   ) -> BlockInputs:
    m, geom = self.config.model, self.geom
    B = c_BxGxD.shape[0]
    cos, sin = rope_tables(layout.pos_BxSx3, m.rope_axes_dim, m.rope_theta)
    Sv, V, T = geom.video_len, geom.num_video_slots, geom.tokens_per_slot
    G, L = geom.num_groups, geom.max_text_len
    as_vid = lambda x: constrain(
        x[:, :Sv].reshape(B, V, T, *x.shape[2:]),
        ("batch", None, "length") + (None,) * (x.ndim - 2))
    as_txt = lambda x: x[:, Sv:].reshape(B, G, L, *x.shape[2:])
    # The joint sequence in context-parallel order (`striping`): with the
    # mesh's context axis n, every device's chunk holds the same groups.
    n = context.mesh_axis_size(context.AXIS)
    shapes = ((V, T), (G, L))
    mask = attention.GroupMask(
        q_group=striping.striped_ids(layout.groups_S, shapes, n),
        kv_group=striping.striped_ids(layout.groups_S, shapes, n),
        kv_valid=striping.stripe([as_vid(layout.valid_BxS),
                                  as_txt(layout.valid_BxS)], n),
        causal=m.attention_mask == "context_causal")
    silu_c = jax.nn.silu(c_BxGxD)
    return BlockInputs(
        silu_c_vid_BxVxD=silu_c[:, geom.video_slot_groups],
        silu_c_txt_BxGxD=silu_c,
        rope_vid=(as_vid(cos), as_vid(sin)),
        rope_txt=(as_txt(cos), as_txt(sin)) if m.text_rope else None,
        mask=mask, attention_impl=m.attention_impl,
        block_q=m.block_q, block_kv=m.block_kv, context=n,
        context_strategy=m.context_strategy)

  def run_blocks(self, vid_BxVxTxD, txt_BxGxLxD, ctx: BlockInputs):
    """All blocks: one scan over the stacked dual-stream parameters, then
    (HunyuanVideo) one over the single-stream ones."""
    carry = self._scan(self.transformer_blocks, (vid_BxVxTxD, txt_BxGxLxD),
                       ctx)
    if self.config.model.num_single_layers:
      carry = self._scan(self.single_transformer_blocks, carry, ctx)
    return carry

  def _scan(self, stacked_blocks, carry, ctx: BlockInputs):
    graphdef, params = nnx.split(stacked_blocks)

    def body(carry, layer_params):
      vid, txt = carry
      vid, txt = nnx.merge(graphdef, layer_params)(vid, txt, ctx)
      vid = constrain(vid, ("batch", None, "length", "act_embed"))
      txt = constrain(txt, ("batch", None, None, "act_embed"))
      return (vid, txt), None

    body = remat(body, self.config.model.remat_policy)
    carry, _ = jax.lax.scan(body, carry, params)
    return carry

  def final_layer(self, vid_BxVxTxD, silu_c_vid_BxVxD) -> jax.Array:
    scale, shift = jnp.split(self.norm_out.linear(silu_c_vid_BxVxD), 2, -1)
    x = layer_norm(vid_BxVxTxD) * (1 + scale[:, :, None]) + shift[:, :, None]
    return self.proj_out(x)

  # --- the whole forward --------------------------------------------------------
  def __call__(self, latents_BxNxFxHxWxC: jax.Array, t_BxN: jax.Array,
               text_BxGxL: jax.Array, text_len_BxG: jax.Array,
               num_frames_BxN: jax.Array, pooled_BxGxP: jax.Array | None = None,
               guidance_B: jax.Array | None = None) -> jax.Array:
    """Velocity for every shot slot, [B, N, F, H, W, C_out].

    `text_BxGxL` holds token ids (tokens mode) or embeddings [B, G, L, E]
    (embeddings mode). Outputs at padded frames and shots are meaningless.
    """
    m, geom = self.config.model, self.geom
    dtype = self._dtype()
    layout = build_layout(geom, text_len_BxG, num_frames_BxN,
                          text_rope=m.text_rope)
    txt, pooled = self.embed_text(text_BxGxL, text_len_BxG, pooled_BxGxP,
                                  t_BxN)
    c_BxGxD = self.conditioning(t_BxN, pooled, guidance_B)
    ctx = self.block_inputs(c_BxGxD, layout)

    vid = self.x_embedder(latents_BxNxFxHxWxC.astype(dtype), m.patch_t,
                          m.patch)
    if geom.global_dummy_tokens:
      # The dummy block is a zero (clean) latent frame embedded like video.
      B, _, T, _ = vid.shape
      dummy = self.x_embedder.proj(jnp.zeros((B, 1, T, geom.patch_dim), dtype))
      vid = jnp.concatenate([dummy, vid], axis=1)
    vid = constrain(vid, ("batch", None, "length", "act_embed"))
    vid, _ = self.run_blocks(vid, txt, ctx)
    if geom.global_dummy_tokens:
      vid, silu_c_vid = vid[:, 1:], ctx.silu_c_vid_BxVxD[:, 1:]
    else:
      silu_c_vid = ctx.silu_c_vid_BxVxD
    out = self.final_layer(vid, silu_c_vid)
    out = unpatchify(out, geom.grid, m.patch_t, m.patch)
    return to_velocity(out, latents_BxNxFxHxWxC, t_BxN, m)
