"""Dense reference attention: full logits, ordinary autodiff.

Independent of the blockwise kernel on purpose (it shares only the mask
semantics, via `GroupMask.dense()`), so the tests compare two different
computations. Memory is quadratic in sequence length: tests and small sizes.
"""
import jax
import jax.numpy as jnp

from lct_jax.attention import mask as mask_lib

# Finite, so that fully masked rows give 0 - 0 = 0 rather than inf - inf = NaN.
MASK_VALUE = -1e30


def attend_dense(q_BxSqxHxD: jax.Array, k_BxSkxHxD: jax.Array,
                 v_BxSkxHxD: jax.Array,
                 mask: mask_lib.GroupMask) -> jax.Array:
  """Masked softmax attention; rows with no attendable key output exactly 0."""
  head_dim = q_BxSqxHxD.shape[-1]
  scale = 1.0 / (head_dim ** 0.5)
  logits_BxHxSqxSk = jnp.einsum(
      "bqhd,bkhd->bhqk", q_BxSqxHxD, k_BxSkxHxD,
      preferred_element_type=jnp.float32) * scale
  allowed_Bx1xSqxSk = mask.dense()[:, None]
  logits_BxHxSqxSk = jnp.where(allowed_Bx1xSqxSk, logits_BxHxSqxSk, MASK_VALUE)
  # The max only stabilises exp; softmax is invariant to it, so no gradient.
  max_BxHxSqx1 = jax.lax.stop_gradient(
      logits_BxHxSqxSk.max(axis=-1, keepdims=True))
  # Zero masked probabilities explicitly: in an all-masked row every logit
  # equals the max, so exp() alone would give uniform weights.
  p_BxHxSqxSk = jnp.where(allowed_Bx1xSqxSk,
                          jnp.exp(logits_BxHxSqxSk - max_BxHxSqx1), 0.0)
  denom_BxHxSqx1 = p_BxHxSqxSk.sum(axis=-1, keepdims=True)
  p_BxHxSqxSk = p_BxHxSqxSk / jnp.where(denom_BxHxSqx1 > 0, denom_BxHxSqx1, 1.0)
  o_BxSqxHxD = jnp.einsum(
      "bhqk,bkhd->bqhd", p_BxHxSqxSk, v_BxSkxHxD.astype(jnp.float32),
      preferred_element_type=jnp.float32)
  return o_BxSqxHxD.astype(q_BxSqxHxD.dtype)
