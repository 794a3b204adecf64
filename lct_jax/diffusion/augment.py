"""Training-time scene augmentations, as pure functions of a batch and a key.

All three keep the static shapes and only rewrite contents and lengths:
  * frame substitution (p_frame) [paper]: a shot becomes one of its frames,
    so the model learns image generation and image conditioning;
  * text dropout (p_text) [choice]: all text of a scene becomes the null
    text (token NULL_TOKEN / zero embeddings) for classifier-free guidance;
    lengths are kept so that conditional and unconditional passes share
    RoPE positions;
  * single-shot mixing (p_single) [paper: joint training]: a scene becomes
    one of its shots, with no global prompt.
Batches are dicts; see `lct_jax.batch`. Randomness comes from one key per
example (`keys_B`), so a scene's draws do not depend on which microbatch it
lands in: gradient accumulation sees exactly the full batch's draws.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

PAD_TOKEN = 0
NULL_TOKEN = 1


def split_each(keys_B: jax.Array, n: int) -> tuple[jax.Array, ...]:
  """[B] keys -> n arrays of [B] keys, each example split independently."""
  split_BxN = jax.vmap(lambda k: jax.random.split(k, n))(keys_B)
  return tuple(split_BxN[:, i] for i in range(n))


def uniform_each(keys_B: jax.Array, shape=()) -> jax.Array:
  """U[0, 1) of `shape` per example: [B, *shape]."""
  return jax.vmap(lambda k: jax.random.uniform(k, shape))(keys_B)


def substitute_frames(keys_B, latents_BxNxFxHxWxC, num_frames_BxN, p_frame: float,
                      patch_t: int = 1):
  """With probability p_frame per shot, keep one random valid frame only.

  Latent frame f becomes frame 0 and the shot's length becomes `patch_t`
  (one token frame; the other patch_t - 1 frames repeat it). With a causal
  video VAE only latent frame 0 is an image latent, so pipelines on real data
  should substitute in pixel space before encoding; this latent version is
  exact for pixel-space and per-frame latents.
  """
  B, N, F = latents_BxNxFxHxWxC.shape[:3]
  k_apply, k_frame = split_each(keys_B, 2)
  apply_BxN = (uniform_each(k_apply, (N,)) < p_frame) & (num_frames_BxN > 0)
  pick_BxN = jnp.floor(uniform_each(k_frame, (N,))
                       * num_frames_BxN).astype(jnp.int32)
  frame = jnp.take_along_axis(
      latents_BxNxFxHxWxC, pick_BxN[:, :, None, None, None, None], axis=2)
  image = jnp.broadcast_to(frame, latents_BxNxFxHxWxC.shape)
  latents = jnp.where(apply_BxN[:, :, None, None, None, None], image,
                      latents_BxNxFxHxWxC)
  num_frames = jnp.where(apply_BxN, min(patch_t, F), num_frames_BxN)
  return latents, num_frames


def drop_text(keys_B, text, text_len_BxG, p_text: float, pooled=None):
  """With probability p_text per scene, all its text becomes null text."""
  drop_B = uniform_each(keys_B) < p_text
  if jnp.issubdtype(text.dtype, jnp.integer):
    valid = jnp.arange(text.shape[2]) < text_len_BxG[..., None]
    null = jnp.where(valid, NULL_TOKEN, PAD_TOKEN).astype(text.dtype)
    text = jnp.where(drop_B[:, None, None], null, text)
  else:
    text = jnp.where(drop_B[:, None, None, None], 0.0, text).astype(text.dtype)
  if pooled is not None:
    pooled = jnp.where(drop_B[:, None, None], 0.0, pooled).astype(pooled.dtype)
  return text, pooled


def to_single_shot(keys_B, batch: dict, p_single: float) -> dict:
  """With probability p_single per scene, keep one random valid shot.

  The chosen shot moves to slot 1 with its prompt; the other slots become
  padding and the global prompt is emptied (a plain single-shot example).
  """
  num_frames = batch["num_frames"]
  B, N = num_frames.shape
  k_apply, k_shot = split_each(keys_B, 2)
  n_valid_B = jnp.sum(num_frames > 0, axis=1)
  apply_B = (uniform_each(k_apply) < p_single) & (n_valid_B > 1)
  # Valid shots form a prefix of the slots (the layout contract).
  shot_B = jnp.floor(uniform_each(k_shot) * n_valid_B).astype(jnp.int32)

  def pick(x_BxN, fill):
    """Slot 0 <- slot `shot`, other slots <- fill, where apply_B."""
    chosen = jnp.take_along_axis(
        x_BxN, shot_B.reshape((B, 1) + (1,) * (x_BxN.ndim - 2)), axis=1)
    single = jnp.concatenate(
        [chosen, jnp.full_like(x_BxN[:, 1:], fill)], axis=1)
    return jnp.where(apply_B.reshape((B,) + (1,) * (x_BxN.ndim - 1)), single,
                     x_BxN)

  out = dict(batch)
  out["latents"] = pick(batch["latents"], 0)
  out["num_frames"] = pick(num_frames, 0)
  # Text groups: 0 = global, 1..N = shots.
  text, text_len = batch["text"], batch["text_len"]
  shot_text = pick(text[:, 1:], PAD_TOKEN if jnp.issubdtype(
      text.dtype, jnp.integer) else 0)
  shot_len = pick(text_len[:, 1:], 0)
  glob_len = jnp.where(apply_B, 0, text_len[:, 0])
  out["text"] = jnp.concatenate([text[:, :1], shot_text], axis=1)
  out["text_len"] = jnp.concatenate([glob_len[:, None], shot_len], axis=1)
  if batch.get("pooled") is not None:
    pooled = batch["pooled"]
    shot_pooled = pick(pooled[:, 1:], 0)
    glob = jnp.where(apply_B[:, None], 0.0, pooled[:, 0])
    out["pooled"] = jnp.concatenate([glob[:, None], shot_pooled], axis=1)
  return out
