"""The LCT MMDiT: a single-shot MMDiT that reads a whole scene.

Inputs are a scene batch at static shapes (DESIGN.md section 2); the only
LCT-specific pieces are parameter-free: the interleaved 3D RoPE positions,
per-group timesteps (each group's conditioning drives all of its tokens), and
the group mask. Blocks are stacked (`nnx.vmap` at init) and run by one
`lax.scan`, so compile time does not grow with depth.
"""
from __future__ import annotations

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
from lct_jax.model.remat import remat
from lct_jax.parallel import constrain


class ContextEmbedder(nnx.Module):
  """Text -> width: learned tokens or given embeddings, then `proj_in`."""

  def __init__(self, m, *, rngs: nnx.Rngs):
    if m.text_mode == "tokens":
      self.token_embedder = TokenEmbed(m.vocab_size, m.text_embed_dim,
                                       rngs=rngs)
    self.proj_in = linear(m.text_embed_dim, m.width, (None, "embed"),
                          rngs=rngs)


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


class MMDiT(nnx.Module):

  def __init__(self, config, *, rngs: nnx.Rngs):
    configlib.validate(config)
    # Frozen: hashable (graphdefs are jit cache keys) and safe from edits.
    self.config = ml_collections.FrozenConfigDict(config)
    m = config.model
    self.geom = SceneGeometry.from_config(config)
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
    self.norm_out = FinalLayer(m.width, rngs=rngs, zero=m.zero_init)
    self.proj_out = linear(
        m.width, out_channels * m.patch_t * m.patch ** 2, ("embed", None),
        rngs=rngs, zero=m.zero_init)

  # --- conditioning -----------------------------------------------------------
  def embed_text(self, text_BxGxL: jax.Array, text_len_BxG: jax.Array,
                 pooled_BxGxP: jax.Array | None):
    """-> (text tokens [B, G, L, D], pooled vector or None)."""
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
    txt_BxGxLxD = ce.proj_in(emb_BxGxLxE.astype(self._dtype()))
    return txt_BxGxLxD, (pooled_BxGxP if m.use_pooled_text else None)

  def conditioning(self, t_BxN, pooled_BxGxP, guidance_B=None) -> jax.Array:
    """Per-group conditioning c [B, G, D]; group 0 (global) at a fixed t."""
    m = self.config.model
    B = t_BxN.shape[0]
    t_BxG = jnp.concatenate(
        [jnp.full((B, 1), m.global_timestep, t_BxN.dtype), t_BxN], axis=1)
    tte = self.time_text_embed
    sinus = timestep_sinusoid(t_BxG * m.timestep_scale)
    c_BxGxD = tte.timestep_embedder(sinus.astype(self._dtype()))
    if m.use_pooled_text:
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
    """All dual-stream blocks: one scan over the stacked parameters."""
    graphdef, params = nnx.split(self.transformer_blocks)

    def body(carry, layer_params):
      vid, txt = carry
      vid, txt = nnx.merge(graphdef, layer_params)(vid, txt, ctx)
      vid = constrain(vid, ("batch", None, "length", "act_embed"))
      txt = constrain(txt, ("batch", None, None, "act_embed"))
      return (vid, txt), None

    body = remat(body, self.config.model.remat_policy)
    (vid, txt), _ = jax.lax.scan(body, (vid_BxVxTxD, txt_BxGxLxD), params)
    return vid, txt

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
    txt, pooled = self.embed_text(text_BxGxL, text_len_BxG, pooled_BxGxP)
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
    return unpatchify(out, geom.grid, m.patch_t, m.patch).astype(jnp.float32)
