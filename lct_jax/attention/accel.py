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
from jax.sharding import PartitionSpec as P

from lct_jax.attention import mask as mask_lib
from lct_jax.parallel.logical import shard_specs

_log = logging.getLogger(__name__)
CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)


def target_platform() -> str:
  """'tpu', 'gpu' or 'cpu': where the computation being traced will run.

  The devices of the active mesh decide: a step compiled for a TPU slice on
  a CPU-only machine (`train.py --compile_for`) is TPU code. Off a mesh,
  jax's default backend.
  """
  mesh = jax.sharding.get_abstract_mesh()
  device = (None if mesh is None or mesh.empty
            else getattr(mesh, "abstract_device", None))
  platform = getattr(device, "platform", None) or jax.default_backend()
  return {"cuda": "gpu", "rocm": "gpu"}.get(platform, platform)


def cudnn_unsupported_reason(q_BxSqxHxD) -> str | None:
  """Why cuDNN cannot run this call here, or None if it can."""
  if target_platform() != "gpu":
    return f"backend is {target_platform()!r}, not 'gpu'"
  return cudnn_shape_reason(q_BxSqxHxD)


def cudnn_shape_reason(q_BxSqxHxD) -> str | None:
  """Why cuDNN flash attention cannot take these inputs on any GPU."""
  if q_BxSqxHxD.dtype not in CUDNN_DTYPES:
    return f"dtype {q_BxSqxHxD.dtype} (cuDNN flash needs bf16/fp16)"
  if q_BxSqxHxD.shape[-1] % 8 or q_BxSqxHxD.shape[-1] > 256:
    return f"head_dim {q_BxSqxHxD.shape[-1]} (needs a multiple of 8, <= 256)"
  return None


def splash_unsupported_reason(q_BxSqxHxD, k_BxSkxHxD) -> str | None:
  if target_platform() != "tpu":
    return f"backend is {target_platform()!r}, not 'tpu'"
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


@functools.cache
def _staircase_class():
  """The staircase mask class, a subclass of splash's `Mask` (made on first
  use: splash's modules take a second to import and most runs never need
  them)."""
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm  # pylint: disable=g-import-not-at-top

  class Staircase(sm.Mask):
    """The shot staircase (kv_group <= q_group) as a splash mask, computed
    per block from the group ids: nothing of size Sq x Sk is ever built.

    Splash reads the mask block by block at trace time to find the blocks
    it may skip; a block whose keys' groups all precede its queries' is
    answered with ones, one whose keys all follow with zeros, with no
    comparison.
    """

    def __init__(self, q_group, kv_group):
      self.q_group, self.kv_group = np.asarray(q_group), np.asarray(kv_group)

    @property
    def shape(self):
      return (len(self.q_group), len(self.kv_group))

    def __getitem__(self, idx) -> np.ndarray:
      q_sl, kv_sl = idx
      qg, kg = self.q_group[q_sl], self.kv_group[kv_sl]
      if kg.max() <= qg.min():
        return np.ones((len(qg), len(kg)), np.bool_)
      if kg.min() > qg.max():
        return np.zeros((len(qg), len(kg)), np.bool_)
      return kg[None, :] <= qg[:, None]

    def __eq__(self, other):
      return (isinstance(other, Staircase) and
              np.array_equal(self.q_group, other.q_group) and
              np.array_equal(self.kv_group, other.kv_group))

    def __hash__(self):
      return hash((self.q_group.tobytes(), self.kv_group.tobytes()))

  return Staircase


def splash_mask(mask: mask_lib.GroupMask):
  """The static part of the mask as a splash mask: `FullMask` when
  bidirectional (key padding is the segment ids), the staircase by blocks
  when context-causal."""
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm  # pylint: disable=g-import-not-at-top
  if not mask.causal:
    return sm.FullMask((mask.q_len, mask.kv_len))
  return _staircase_class()(mask.q_group, mask.kv_group)


def attend_splash(q_BxSqxHxD, k_BxSkxHxD, v_BxSkxHxD,
                  mask: mask_lib.GroupMask, *, block: int = 512,
                  interpret: bool = False,
                  per_device: bool = False) -> jax.Array:
  """Splash attention (TPU; `interpret=True` runs the kernel anywhere).

  Under a mesh the kernel runs per device in a `shard_map` over the batch
  and head axes (a Mosaic kernel cannot be partitioned automatically); the
  sequence must not be sharded there (context parallelism has its own
  strategies). `per_device`: the call is already inside a shard_map (a
  context strategy's local kernel).
  """
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk  # pylint: disable=g-import-not-at-top
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm  # pylint: disable=g-import-not-at-top
  batch, _, heads, _ = q_BxSqxHxD.shape
  bq, bk = min(block, mask.q_len), min(block, mask.kv_len)
  sizes = sk.BlockSizes(block_q=bq, block_kv=bk, block_kv_compute=bk,
                        block_q_dkv=bq, block_kv_dkv=bk,
                        block_kv_dkv_compute=bk, block_q_dq=bq, block_kv_dq=bk)
  scale = 1.0 / np.sqrt(q_BxSqxHxD.shape[-1])
  static = splash_mask(mask)

  def local(q_BxSqxHxD, k_BxSkxHxD, v_BxSkxHxD, kv_valid_BxSk):
    kernel = sk.make_splash_mha(
        sm.MultiHeadMask([static] * q_BxSqxHxD.shape[2]), block_sizes=sizes,
        head_shards=1, q_seq_shards=1, interpret=interpret)

    def one(q_SxHxD, k_SxHxD, v_SxHxD, valid_Sk):
      seg = sk.SegmentIds(q=jnp.ones((mask.q_len,), jnp.int32),
                          kv=valid_Sk.astype(jnp.int32))
      o_HxSxD = kernel(jnp.swapaxes(q_SxHxD, 0, 1) * scale,
                       jnp.swapaxes(k_SxHxD, 0, 1),
                       jnp.swapaxes(v_SxHxD, 0, 1), segment_ids=seg)
      return jnp.swapaxes(o_HxSxD, 0, 1)
    return jax.vmap(one)(q_BxSqxHxD, k_BxSkxHxD, v_BxSkxHxD, kv_valid_BxSk)

  mesh = jax.sharding.get_abstract_mesh()
  if not per_device and mesh is not None and not mesh.empty and mesh.size > 1:
    batch_axes, heads_axis = shard_specs(batch, heads)
    x, valid = P(batch_axes, None, heads_axis, None), P(batch_axes, None)
    # check_vma=False: splash's pallas_call does not declare how its
    # outputs vary over the mesh axes.
    local = jax.shard_map(local, in_specs=(x, x, x, valid), out_specs=x,
                          check_vma=False)
  o = local(q_BxSqxHxD, k_BxSkxHxD, v_BxSkxHxD, mask.kv_valid)
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
