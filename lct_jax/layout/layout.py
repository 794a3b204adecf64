"""Per-example token layout: validity and interleaved 3D RoPE positions.

The rule (docs/design.md section 2), with a running scalar offset o = 0, per group:
  text token i          -> (o+i, o+i, o+i)     only the L_text(g) real tokens
  s = o + L_text(g)
  video token (f, y, x) -> (s+f, s+y, s+x)     patched latent-grid units
  o = s + max(F'_g, H', W')
The global group (g = 0) advances o like a 1-frame shot. Padding (text beyond
L_text(g), frames beyond a shot's length, padded shots) never advances o and is
masked as a key. `text_rope=False` is the legacy single-shot layout: text gets
position 0 (no rotation) and every shot's video starts at 0.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from lct_jax.layout.geometry import SceneGeometry


@dataclasses.dataclass(frozen=True)
class TokenLayout:
  """Layout of one batch. Arrays follow the joint order [video ; text]."""
  groups_S: np.ndarray          # int32 [S], static: group id per position
  valid_BxS: jax.Array          # bool  [B, S]: real (non-padding) tokens
  pos_BxSx3: jax.Array          # int32 [B, S, 3]: (t, h, w) RoPE positions
  shot_valid_BxN: jax.Array     # bool  [B, N]


def patched_frames(geom: SceneGeometry, num_frames_BxN: jax.Array) -> jax.Array:
  """Valid latent frames per shot -> valid token frames F'_g (ceil)."""
  return (num_frames_BxN + geom.patch_t - 1) // geom.patch_t


def build_layout(geom: SceneGeometry, text_len_BxG: jax.Array,
                 num_frames_BxN: jax.Array, *, text_rope: bool = True
                 ) -> TokenLayout:
  """Builds validity and positions from per-example lengths (traceable)."""
  text_len_BxG = jnp.asarray(text_len_BxG, jnp.int32)
  num_frames_BxN = jnp.asarray(num_frames_BxN, jnp.int32)
  B = text_len_BxG.shape[0]
  L = geom.max_text_len
  Fp, Hp, Wp = geom.grid

  shot_valid_BxN = num_frames_BxN > 0
  group_valid_BxG = jnp.concatenate(
      [jnp.ones((B, 1), bool), shot_valid_BxN], axis=1)
  text_len_BxG = jnp.where(group_valid_BxG, jnp.clip(text_len_BxG, 0, L), 0)
  # The global group's dummy block is 1 frame long; shots use their length.
  frames_BxG = jnp.concatenate(
      [jnp.ones((B, 1), jnp.int32), patched_frames(geom, num_frames_BxN)],
      axis=1)

  # Offsets: o_g = sum over earlier groups of (L_text + max(F', H', W')).
  extent_BxG = jnp.maximum(frames_BxG, max(Hp, Wp))
  advance_BxG = jnp.where(group_valid_BxG, text_len_BxG + extent_BxG, 0)
  offset_BxG = jnp.cumsum(advance_BxG, axis=1) - advance_BxG
  video_start_BxG = offset_BxG + text_len_BxG

  # Text slots [B, G, L].
  i_L = jnp.arange(L, dtype=jnp.int32)
  text_valid_BxGxL = i_L[None, None, :] < text_len_BxG[:, :, None]
  text_pos_BxGxL = offset_BxG[:, :, None] + i_L[None, None, :]
  if not text_rope:
    text_pos_BxGxL = jnp.zeros_like(text_pos_BxGxL)
  text_pos_BxGxLx3 = jnp.repeat(text_pos_BxGxL[..., None], 3, axis=-1)

  # Video slots [B, V, F', H', W'] for the slot groups (0..N or 1..N).
  slot_groups = geom.video_slot_groups
  start_BxV = video_start_BxG[:, slot_groups]
  if not text_rope:
    start_BxV = jnp.zeros_like(start_BxV)
  f, y, x = np.meshgrid(np.arange(Fp), np.arange(Hp), np.arange(Wp),
                        indexing="ij")
  fyx_Tx3 = jnp.asarray(np.stack([f, y, x], -1).reshape(-1, 3), jnp.int32)
  video_pos_BxVxTx3 = start_BxV[:, :, None, None] + fyx_Tx3[None, None]
  frames_BxV = frames_BxG[:, slot_groups]
  video_valid_BxVxT = ((fyx_Tx3[None, None, :, 0] < frames_BxV[:, :, None])
                       & group_valid_BxG[:, slot_groups][:, :, None])

  valid_BxS = jnp.concatenate([video_valid_BxVxT.reshape(B, -1),
                               text_valid_BxGxL.reshape(B, -1)], axis=1)
  pos_BxSx3 = jnp.concatenate([video_pos_BxVxTx3.reshape(B, -1, 3),
                               text_pos_BxGxLx3.reshape(B, -1, 3)], axis=1)
  return TokenLayout(groups_S=geom.token_groups(), valid_BxS=valid_BxS,
                     pos_BxSx3=pos_BxSx3, shot_valid_BxN=shot_valid_BxN)
