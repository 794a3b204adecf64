"""Accelerator kernels behind `attend`: cuDNN flash attention and TPU splash.

Neither builds a dense [B, Sq, Sk] mask on the device:

- cuDNN (`jax.nn.dot_product_attention(implementation='cudnn')`) takes key
  *lengths*, not masks. Keys are sorted once per example so that valid keys
  come first in group order and padding last; then every query group g
  attends a prefix of that order, of length = its valid keys of groups <= g.
  Bidirectional is one call; the shot staircase (context_causal) is one call
  per group over that group's queries. The same code runs with
  implementation='xla' on CPU, which is how it is tested.
- splash (Pallas, TPU) takes the staircase as a block mask: the static group
  rule becomes splash's block-sparse mask info at trace time (fully masked
  blocks are skipped, partial ones carry a small mask), and key padding
  becomes segment ids (query segment 1, key segment 1 = valid / 0 = padding).

Rows that attend nothing are zeroed explicitly (the kernels would give NaN
or uniform weights there), matching `attend_dense`.
"""
from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np

from lct_jax.attention import mask as mask_lib

_log = logging.getLogger(__name__)
CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)


def cudnn_unsupported_reason(q_BxSqxHxD) -> str | None:
  """Why cuDNN cannot run this call here, or None if it can."""
  if jax.default_backend() != "gpu":
    return f"backend is {jax.default_backend()!r}, not 'gpu'"
  return cudnn_shape_reason(q_BxSqxHxD)


def cudnn_shape_reason(q_BxSqxHxD) -> str | None:
  """Why cuDNN flash attention cannot take these inputs on any GPU."""
  if q_BxSqxHxD.dtype not in CUDNN_DTYPES:
    return f"dtype {q_BxSqxHxD.dtype} (cuDNN flash needs bf16/fp16)"
  if q_BxSqxHxD.shape[-1] % 8 or q_BxSqxHxD.shape[-1] > 256:
    return f"head_dim {q_BxSqxHxD.shape[-1]} (needs a multiple of 8, <= 256)"
  return None


def splash_unsupported_reason(q_BxSqxHxD, k_BxSkxHxD) -> str | None:
  if jax.default_backend() != "tpu":
    return f"backend is {jax.default_backend()!r}, not 'tpu'"
  if q_BxSqxHxD.shape[1] % 128 or k_BxSkxHxD.shape[1] % 128:
    return "sequence lengths are not multiples of 128"
  return None


def attend_key_prefixes(q_BxSqxHxD, k_BxSkxHxD, v_BxSkxHxD,
                        mask: mask_lib.GroupMask, *,
                        implementation: str | None = "cudnn") -> jax.Array:
  """Group-masked attention from key-prefix lengths only (see module doc)."""
  kv_valid_BxSk = mask.kv_valid
  big = np.iinfo(np.int32).max
  # Sort keys: valid ones by group (stable: then by position), padding last.
  rank_BxSk = jnp.where(kv_valid_BxSk, jnp.asarray(mask.kv_group), big)
  order_BxSk = jnp.argsort(rank_BxSk, axis=1, stable=True)
  take = lambda x: jnp.take_along_axis(x, order_BxSk[:, :, None, None], axis=1)
  k_sorted, v_sorted = take(k_BxSkxHxD), take(v_BxSkxHxD)
  dpa = functools.partial(jax.nn.dot_product_attention,
                          implementation=implementation)

  def run(q_BxQxHxD, lengths_B):
    o = dpa(q_BxQxHxD, k_sorted, v_sorted,
            key_value_seq_lengths=jnp.maximum(lengths_B, 1).astype(jnp.int32))
    return jnp.where((lengths_B > 0)[:, None, None, None], o, 0).astype(
        q_BxQxHxD.dtype)

  if not mask.causal:
    return run(q_BxSqxHxD, kv_valid_BxSk.sum(axis=1))
  out = jnp.zeros_like(q_BxSqxHxD)
  for g in np.unique(mask.q_group):
    rows = np.nonzero(mask.q_group == g)[0]
    contiguous = rows[-1] - rows[0] + 1 == len(rows)
    q_g = (q_BxSqxHxD[:, rows[0]:rows[-1] + 1] if contiguous
           else q_BxSqxHxD[:, rows])
    lengths_B = (kv_valid_BxSk & jnp.asarray(mask.kv_group <= g)).sum(axis=1)
    o_g = run(q_g, lengths_B)
    out = (out.at[:, rows[0]:rows[-1] + 1].set(o_g) if contiguous
           else out.at[:, rows].set(o_g))
  return out


def splash_mask(mask: mask_lib.GroupMask):
  """The static part of the mask as a splash `NumpyMask` (host-side bits).

  Splash turns it into block-sparse `MaskInfo` at trace time; on the device
  only partially masked blocks carry mask bits. Host cost: Sq x Sk bytes
  once per trace (1 GB at 32K tokens), acceptable for training lengths.
  """
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm  # pylint: disable=g-import-not-at-top
  if mask.causal:
    dense_SqxSk = mask.kv_group[None, :] <= mask.q_group[:, None]
  else:
    dense_SqxSk = np.ones((mask.q_len, mask.kv_len), dtype=bool)
  return sm.NumpyMask(dense_SqxSk)


def attend_splash(q_BxSqxHxD, k_BxSkxHxD, v_BxSkxHxD,
                  mask: mask_lib.GroupMask, *, block: int = 512,
                  interpret: bool = False) -> jax.Array:
  """Splash attention (TPU; `interpret=True` runs the kernel anywhere)."""
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk  # pylint: disable=g-import-not-at-top
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm  # pylint: disable=g-import-not-at-top
  heads = q_BxSqxHxD.shape[2]
  bq, bk = min(block, mask.q_len), min(block, mask.kv_len)
  sizes = sk.BlockSizes(block_q=bq, block_kv=bk, block_kv_compute=bk,
                        block_q_dkv=bq, block_kv_dkv=bk,
                        block_kv_dkv_compute=bk, block_q_dq=bq, block_kv_dq=bk)
  kernel = sk.make_splash_mha(
      sm.MultiHeadMask([splash_mask(mask)] * heads), block_sizes=sizes,
      head_shards=1, q_seq_shards=1, interpret=interpret)
  scale = 1.0 / np.sqrt(q_BxSqxHxD.shape[-1])

  def one(q_SxHxD, k_SxHxD, v_SxHxD, valid_Sk):
    seg = sk.SegmentIds(q=jnp.ones((mask.q_len,), jnp.int32),
                        kv=valid_Sk.astype(jnp.int32))
    o_HxSxD = kernel(jnp.swapaxes(q_SxHxD, 0, 1) * scale,
                     jnp.swapaxes(k_SxHxD, 0, 1), jnp.swapaxes(v_SxHxD, 0, 1),
                     segment_ids=seg)
    return jnp.swapaxes(o_HxSxD, 0, 1)

  o = jax.vmap(one)(q_BxSqxHxD, k_BxSkxHxD, v_BxSkxHxD, mask.kv_valid)
  return jnp.where(rows_with_keys(mask)[:, :, None, None], o, 0).astype(
      q_BxSqxHxD.dtype)


def rows_with_keys(mask: mask_lib.GroupMask) -> jax.Array:
  """bool [B, Sq]: rows that may attend some key, via per-group counts."""
  if not mask.causal:
    return jnp.broadcast_to(mask.kv_valid.any(axis=1)[:, None],
                            (mask.batch_size, mask.q_len))
  groups = np.unique(mask.q_group)
  has_BxG = jnp.stack([(mask.kv_valid & jnp.asarray(mask.kv_group <= g)).any(
      axis=1) for g in groups], axis=1)
  return has_BxG[:, np.searchsorted(groups, mask.q_group)]
