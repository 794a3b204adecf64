"""Blockwise (flash-style) attention in pure JAX, memory linear in length.

FlashAttention-2 structure with a hand-written backward (`jax.custom_vjp`):
the forward keeps only the output and the per-row logsumexp; the backward
recomputes each tile's probabilities. Autodiff through the tile loop would
instead store every tile's probabilities, i.e. the quadratic array we avoid.

Tile skipping has two parts:
- static: group ids are numpy, so at trace time we list the (q tile, kv tile)
  pairs the causal rule can allow and scan over that flat list only. Work is
  proportional to the needed tiles; the loop body is traced once, so compile
  time does not grow with sequence length.
- dynamic: a kv tile without a valid key in any batch element (a padded shot)
  is skipped at run time with `lax.cond`.

Internally tensors are [B, H, S, D] so that a tile is a slice of axis 2;
in tile code Q and K stand for the tile lengths block_q and block_kv.
"""
import jax
import jax.numpy as jnp
from jax import lax

from lct_jax.attention import mask as mask_lib
from lct_jax.attention.plan import (Plan, make_plan, pad_ids,  # pylint: disable=unused-import
                                    plan_one, tile_schedule)

# Finite, so that fully masked rows give 0 - 0 = 0 rather than inf - inf = NaN.
MASK_VALUE = -1e30


def _group_ids(plan: Plan, ids):
  """(q ids [Sq_pad], kv ids [Sk_pad]): the plan's constants, or `ids`.

  Context parallelism passes ids as traced arrays when the devices' chunks
  differ (each device slices its own); the schedule is then a union over
  devices and `_tile_needed` skips the rest at run time.
  """
  if ids is None:
    return jnp.asarray(plan.q_group_pad), jnp.asarray(plan.kv_group_pad)
  return ids


def _tile_allowed(plan: Plan, ids, kv_valid_BxSk, q_start, kv_start):
  """bool, broadcastable to [B, H, bq, bk]: the mask of one tile."""
  valid_Bxbk = lax.dynamic_slice_in_dim(kv_valid_BxSk, kv_start, plan.block_kv,
                                        axis=1)
  allowed = valid_Bxbk[:, None, None, :]
  if plan.causal:
    q_ids, kv_ids = _group_ids(plan, ids)
    q_group_bq = lax.dynamic_slice_in_dim(q_ids, q_start, plan.block_q)
    kv_group_bk = lax.dynamic_slice_in_dim(kv_ids, kv_start, plan.block_kv)
    causal_bqxbk = kv_group_bk[None, :] <= q_group_bq[:, None]
    allowed = allowed & causal_bqxbk[None, None]
  return allowed


def _tile_needed(plan: Plan, ids, kv_valid_BxSk):
  """(pair -> bool): run-time skip of a scheduled (q tile, kv tile) pair.

  Always: the kv tile holds a valid key in some batch element. With traced
  ids also the causal rule, which the static schedule could only check for
  the union of the devices.
  """
  batch = kv_valid_BxSk.shape[0]
  num_kv_tiles = plan.kv_len_pad // plan.block_kv
  has_valid_Nk = kv_valid_BxSk.reshape(batch, num_kv_tiles, plan.block_kv).any(
      axis=(0, 2))
  if ids is None or not plan.causal:
    return lambda pair: has_valid_Nk[pair[1]]
  q_ids, kv_ids = ids
  q_max_Nq = q_ids.reshape(-1, plan.block_q).max(axis=1)
  kv_min_Nk = kv_ids.reshape(-1, plan.block_kv).min(axis=1)
  return lambda pair: has_valid_Nk[pair[1]] & (kv_min_Nk[pair[1]] <=
                                               q_max_Nq[pair[0]])


def _full_f32(shape, fill, *refs):
  """float32 `fill` of `shape`, varying over every mesh axis the refs vary over.

  Inside `jax.shard_map` (check_vma=True) a scan's carry and a cond's branches
  must vary over the same mesh axes as what updates them; a plain constant
  varies over none. Adding a scalar zero per ref (`zeros_like` keeps the
  ref's axes) costs nothing and needs no version-specific API.
  """
  out = jnp.full(shape, fill, jnp.float32)
  for ref in refs:
    out = out + jnp.zeros_like(ref, dtype=jnp.float32, shape=())
  return out


def _tied(*operands):
  """The operands through one `optimization_barrier`: each output depends on
  every input.

  Why: inside an outer loop (the model's layer scan) the keys' validity, and
  under autodiff the keys themselves, may not depend on the loop's carry.
  JAX's scan partial evaluation then hoists the loop-invariant part of the
  tile loop out of the layer loop, and it does so by running that part as
  its own scan whose per-tile outputs (every tile's mask and masked fill,
  [tiles, B, H, bq, bk]) are stacked: a dense Sq x Sk array per example and
  head, the quadratic memory this kernel exists to avoid. Tied together,
  nothing in the tile loop is invariant, so nothing is hoisted.
  """
  return lax.optimization_barrier(operands)


def _slice(x, start, size):
  return lax.dynamic_slice_in_dim(x, start, size, axis=2)


def _update(x, tile, start):
  return lax.dynamic_update_slice_in_dim(x, tile, start, axis=2)


def forward(plan: Plan, q_BxHxSqxD, k_BxHxSkxD, v_BxHxSkxD, kv_valid_BxSk,
            ids=None, f32_out: bool = False):
  """Online softmax over the scheduled tiles; returns (o, logsumexp).

  Rows that attend nothing get o = 0 and lse = MASK_VALUE (weight 0 when
  partial results are merged, as ring attention does). `f32_out` keeps o
  in float32 for such merges instead of casting to q's dtype.
  """
  q_BxHxSqxD, k_BxHxSkxD, v_BxHxSkxD, kv_valid_BxSk, ids = _tied(
      q_BxHxSqxD, k_BxHxSkxD, v_BxHxSkxD, kv_valid_BxSk, ids)
  batch, heads, q_len, head_dim = q_BxHxSqxD.shape
  scale = 1.0 / (head_dim ** 0.5)
  bq, bk = plan.block_q, plan.block_kv
  needed = _tile_needed(plan, ids, kv_valid_BxSk)

  def tile_update(q_bq, k_bk, v_bk, allowed, o_bq, m_bq, l_bq):
    s_BxHxQxK = jnp.einsum("bhqd,bhkd->bhqk", q_bq, k_bk,
                   preferred_element_type=jnp.float32) * scale
    s_BxHxQxK = jnp.where(allowed, s_BxHxQxK, MASK_VALUE)
    m_new = jnp.maximum(m_bq, s_BxHxQxK.max(axis=-1))
    # Zero masked entries: in a fully masked row s - m_new is 0, not -inf.
    p_BxHxQxK = jnp.where(allowed, jnp.exp(s_BxHxQxK - m_new[..., None]),
                          0.0)
    alpha = jnp.exp(m_bq - m_new)
    l_new = alpha * l_bq + p_BxHxQxK.sum(axis=-1)
    o_new = alpha[..., None] * o_bq + jnp.einsum(
        "bhqk,bhkd->bhqd", p_BxHxQxK.astype(v_bk.dtype), v_bk,
        preferred_element_type=jnp.float32)
    return o_new, m_new, l_new

  def skip(q_bq, k_bk, v_bk, allowed, o_bq, m_bq, l_bq):
    del q_bq, k_bk, v_bk, allowed
    return o_bq, m_bq, l_bq

  def body(carry, pair):
    o_acc, m_acc, l_acc = carry
    q_start, kv_start = pair[0] * bq, pair[1] * bk
    o_bq, m_bq, l_bq = lax.cond(
        needed(pair), tile_update, skip,
        _slice(q_BxHxSqxD, q_start, bq), _slice(k_BxHxSkxD, kv_start, bk),
        _slice(v_BxHxSkxD, kv_start, bk),
        _tile_allowed(plan, ids, kv_valid_BxSk, q_start, kv_start),
        _slice(o_acc, q_start, bq), _slice(m_acc, q_start, bq),
        _slice(l_acc, q_start, bq))
    carry = (_update(o_acc, o_bq, q_start), _update(m_acc, m_bq, q_start),
             _update(l_acc, l_bq, q_start))
    return carry, None

  refs = (q_BxHxSqxD, k_BxHxSkxD, v_BxHxSkxD, kv_valid_BxSk)
  init = (_full_f32((batch, heads, q_len, head_dim), 0.0, *refs),
          _full_f32((batch, heads, q_len), MASK_VALUE, *refs),
          _full_f32((batch, heads, q_len), 0.0, *refs))
  (o_acc, m_acc, l_acc), _ = lax.scan(body, init, jnp.asarray(plan.pairs))
  # l == 0 exactly when a row attended nothing: output 0, and a finite lse
  # (the backward zeroes that row's probabilities through the mask anyway).
  has_keys = l_acc > 0
  o = o_acc / jnp.where(has_keys, l_acc, 1.0)[..., None]
  lse = jnp.where(has_keys, m_acc + jnp.log(jnp.where(has_keys, l_acc, 1.0)),
                  MASK_VALUE)
  return o if f32_out else o.astype(q_BxHxSqxD.dtype), lse


def backward(plan: Plan, q_BxHxSqxD, k_BxHxSkxD, v_BxHxSkxD, kv_valid_BxSk,
             o_BxHxSqxD, lse_BxHxSq, do_BxHxSqxD, ids=None, dlse_BxHxSq=None,
             f32_out: bool = False):
  """FlashAttention-2 backward over the same tile schedule.

  `o` and `lse` may be those of a larger key set of which this call sees a
  part (ring attention): the result is then that part's contribution to
  dq and the full dk, dv of the keys given. `dlse` is a cotangent of the
  logsumexp output, if it has one (d lse_i / d s_ij = p_ij). `f32_out`
  returns float32 gradients (for sums over ring steps).
  """
  (q_BxHxSqxD, k_BxHxSkxD, v_BxHxSkxD, kv_valid_BxSk, ids, o_BxHxSqxD,
   lse_BxHxSq, do_BxHxSqxD) = _tied(q_BxHxSqxD, k_BxHxSkxD, v_BxHxSkxD,
                                    kv_valid_BxSk, ids, o_BxHxSqxD,
                                    lse_BxHxSq, do_BxHxSqxD)
  head_dim = q_BxHxSqxD.shape[-1]
  scale = 1.0 / (head_dim ** 0.5)
  bq, bk = plan.block_q, plan.block_kv
  needed = _tile_needed(plan, ids, kv_valid_BxSk)
  # D_i = sum_j P_ij dP_ij = rowsum(dO * O): the softmax Jacobian's correction.
  delta_BxHxSq = jnp.sum(do_BxHxSqxD.astype(jnp.float32) *
                         o_BxHxSqxD.astype(jnp.float32), axis=-1)
  if dlse_BxHxSq is not None:
    delta_BxHxSq = delta_BxHxSq - dlse_BxHxSq.astype(jnp.float32)

  def tile_grads(q_bq, k_bk, v_bk, do_bq, lse_bq, delta_bq, allowed,
                 dq_bq, dk_bk, dv_bk):
    s_BxHxQxK = jnp.einsum("bhqd,bhkd->bhqk", q_bq, k_bk,
                   preferred_element_type=jnp.float32) * scale
    s_BxHxQxK = jnp.where(allowed, s_BxHxQxK, MASK_VALUE)
    p_BxHxQxK = jnp.where(allowed, jnp.exp(s_BxHxQxK - lse_bq[..., None]),
                          0.0)
    dv_bk = dv_bk + jnp.einsum(
        "bhqk,bhqd->bhkd", p_BxHxQxK.astype(do_bq.dtype), do_bq,
        preferred_element_type=jnp.float32)
    dp_BxHxQxK = jnp.einsum("bhqd,bhkd->bhqk", do_bq, v_bk,
                    preferred_element_type=jnp.float32)
    ds_BxHxQxK = p_BxHxQxK * (dp_BxHxQxK - delta_bq[..., None])
    dq_bq = dq_bq + scale * jnp.einsum(
        "bhqk,bhkd->bhqd", ds_BxHxQxK.astype(k_bk.dtype), k_bk,
        preferred_element_type=jnp.float32)
    dk_bk = dk_bk + scale * jnp.einsum(
        "bhqk,bhqd->bhkd", ds_BxHxQxK.astype(q_bq.dtype), q_bq,
        preferred_element_type=jnp.float32)
    return dq_bq, dk_bk, dv_bk

  def skip(*args):
    return args[-3:]

  def body(carry, pair):
    dq_acc, dk_acc, dv_acc = carry
    q_start, kv_start = pair[0] * bq, pair[1] * bk
    dq_bq, dk_bk, dv_bk = lax.cond(
        needed(pair), tile_grads, skip,
        _slice(q_BxHxSqxD, q_start, bq), _slice(k_BxHxSkxD, kv_start, bk),
        _slice(v_BxHxSkxD, kv_start, bk), _slice(do_BxHxSqxD, q_start, bq),
        _slice(lse_BxHxSq, q_start, bq), _slice(delta_BxHxSq, q_start, bq),
        _tile_allowed(plan, ids, kv_valid_BxSk, q_start, kv_start),
        _slice(dq_acc, q_start, bq), _slice(dk_acc, kv_start, bk),
        _slice(dv_acc, kv_start, bk))
    carry = (_update(dq_acc, dq_bq, q_start), _update(dk_acc, dk_bk, kv_start),
             _update(dv_acc, dv_bk, kv_start))
    return carry, None

  refs = (q_BxHxSqxD, k_BxHxSkxD, v_BxHxSkxD, kv_valid_BxSk, do_BxHxSqxD,
          lse_BxHxSq)
  init = (_full_f32(q_BxHxSqxD.shape, 0.0, *refs),
          _full_f32(k_BxHxSkxD.shape, 0.0, *refs),
          _full_f32(v_BxHxSkxD.shape, 0.0, *refs))
  (dq, dk, dv), _ = lax.scan(body, init, jnp.asarray(plan.pairs))
  if f32_out:
    return dq, dk, dv
  return (dq.astype(q_BxHxSqxD.dtype), dk.astype(k_BxHxSkxD.dtype),
          dv.astype(v_BxHxSkxD.dtype))


def _make_kernel(plan: Plan):
  """A custom_vjp attention on padded [B, H, S, D] inputs for one plan.

  `ids` is None (the plan's static group ids) or traced (q ids, kv ids),
  padded like the plan's; see `_group_ids`.
  """

  @jax.custom_vjp
  def kernel(q, k, v, kv_valid, ids):
    return forward(plan, q, k, v, kv_valid, ids)[0]

  def kernel_fwd(q, k, v, kv_valid, ids):
    o, lse = forward(plan, q, k, v, kv_valid, ids)
    return o, (q, k, v, kv_valid, ids, o, lse)

  def kernel_bwd(residuals, do):
    q, k, v, kv_valid, ids, o, lse = residuals
    dq, dk, dv = backward(plan, q, k, v, kv_valid, o, lse, do, ids=ids)
    # kv_valid and ids are boolean / integer: no cotangent.
    return dq, dk, dv, None, jax.tree.map(lambda _: None, ids)

  kernel.defvjp(kernel_fwd, kernel_bwd)
  return kernel


def to_padded_bhsd(x_BxSxHxD, padded_len):
  x_BxHxSxD = jnp.swapaxes(x_BxSxHxD, 1, 2)
  pad = padded_len - x_BxHxSxD.shape[2]
  return jnp.pad(x_BxHxSxD, ((0, 0), (0, 0), (0, pad), (0, 0)))


def attend_planned(plan: Plan, q_BxSqxHxD, k_BxSkxHxD, v_BxSkxHxD,
                   kv_valid_BxSk, ids=None) -> jax.Array:
  """Attention under a prepared plan; `ids` = traced (q ids, kv ids) or None.

  Inputs are unpadded [B, S, H, D]; usable inside `jax.shard_map`.
  """
  q_len, kv_len = q_BxSqxHxD.shape[1], k_BxSkxHxD.shape[1]
  if q_len == 0 or kv_len == 0 or plan.pairs.shape[0] == 0:
    # No query may see any key (e.g. a cache holding only later groups).
    return jnp.zeros_like(q_BxSqxHxD)
  if ids is not None:
    ids = pad_ids(plan, *ids)
  kv_valid_BxSk = jnp.pad(kv_valid_BxSk,
                          ((0, 0), (0, plan.kv_len_pad - kv_len)),
                          constant_values=False)
  o_BxHxSqxD = _make_kernel(plan)(
      to_padded_bhsd(q_BxSqxHxD, plan.q_len_pad),
      to_padded_bhsd(k_BxSkxHxD, plan.kv_len_pad),
      to_padded_bhsd(v_BxSkxHxD, plan.kv_len_pad), kv_valid_BxSk, ids)
  return jnp.swapaxes(o_BxHxSqxD[:, :, :q_len], 1, 2)


def attend_blockwise(q_BxSqxHxD: jax.Array, k_BxSkxHxD: jax.Array,
                     v_BxSkxHxD: jax.Array, mask: mask_lib.GroupMask, *,
                     block_q: int = 512, block_kv: int = 512) -> jax.Array:
  """Masked attention without any Sq x Sk array; see the module docstring.

  Shapes are assumed checked by `dispatch.attend`.
  """
  q_len, kv_len = q_BxSqxHxD.shape[1], k_BxSkxHxD.shape[1]
  if q_len == 0 or kv_len == 0:
    return jnp.zeros_like(q_BxSqxHxD)
  plan = plan_one(mask.q_group, mask.kv_group, block_q, block_kv,
                    mask.causal)
  return attend_planned(plan, q_BxSqxHxD, k_BxSkxHxD, v_BxSkxHxD,
                        mask.kv_valid)
