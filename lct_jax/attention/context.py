"""Context-parallel attention: the sequence sharded over the 'context' axis.

Three strategies (`model.context_strategy`), each a `jax.shard_map` over
the whole mesh whose per-device work is the blockwise kernel on the
device's contiguous chunk of the sequence (on TPU, splash for all_gather
and ulysses: `attend_context(local='splash')`):

- all_gather: every device gathers all keys and values, attends its queries.
  Simplest; K/V memory and traffic are those of the whole sequence.
- ring: keys and values travel around the ring of context devices (ppermute)
  while each device merges partial results by their logsumexp (online
  softmax). A hand-written backward sends (k, v, dk, dv) around a second
  time, so only the device's own chunks are kept for the backward pass.
- ulysses: all_to_all turns sequence shards into head shards, attention runs
  on the whole sequence for H / n heads, and a second all_to_all turns back.
  Needs the heads of a device divisible by the context axis.

Group ids are static, so each (query chunk, key chunk) pair a device may meet
gets a static tile schedule; the ring skips pairs the mask excludes for every
device. Work is balanced for context_causal when every chunk holds the same
groups: `striping.stripe` lays the model's tokens out that way (each device
a slice of every shot and every prompt), and then all devices share one
schedule. Other layouts work too (a union schedule plus run-time skipping,
with each device's ids passed in), just without the balance.

Queries and keys may differ in length (the KV cache: one shot's queries
against the whole history); each side is split into n chunks of its own.
Sequences not divisible by the axis are padded with keys that are never
attended; padded query rows are dropped.
"""
from __future__ import annotations

import functools
import logging
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec as P

from lct_jax.attention import accel
from lct_jax.attention import blockwise
from lct_jax.attention import mask as mask_lib
from lct_jax.attention import plan as plan_lib
from lct_jax.layout import SceneGeometry
from lct_jax.parallel.logical import shard_specs

STRATEGIES = ("all_gather", "ring", "ulysses")
SPLASH_UNIT = 128          # splash's sequence lengths: multiples of this
AXIS = "context"

_log = logging.getLogger(__name__)


def mesh_axis_size(name: str) -> int:
  """Size of `name` in the mesh being traced under (1 without a mesh)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh is None or mesh.empty or name not in mesh.axis_names:
    return 1
  return mesh.shape[name]


def check_context(strategy: str, *, num_heads: int, seq_len: int,
                  context: int, tensor: int = 1) -> None:
  """Raises ValueError for a strategy/mesh/shape that cannot work.

  Cheap and shape-only: called from `configlib`-level checks before any
  tracing, and again at trace time by `attend_context`.
  """
  if strategy not in STRATEGIES:
    raise ValueError(f"context_strategy={strategy!r} is not one of "
                     f"{STRATEGIES}")
  if context > seq_len:
    raise ValueError(
        f"the mesh's context axis ({context} devices) is larger than the "
        f"sequence ({seq_len} tokens): each device needs at least one token;"
        " use a smaller mesh.context")
  if strategy == "ulysses":
    local_heads = num_heads // tensor if num_heads % tensor == 0 else num_heads
    if local_heads % context:
      raise ValueError(
          f"context_strategy='ulysses' needs the heads of one tensor shard "
          f"({local_heads} = {num_heads} heads / tensor {tensor}) divisible "
          f"by the context axis ({context}); use 'ring' or 'all_gather', or "
          "another mesh")


def check_mesh(config, mesh) -> None:
  """Raises ValueError for a config that cannot run on `mesh`; no tracing.

  Checks what would otherwise fail deep inside compilation: the
  context-parallel strategy against the heads and the sequence length.
  """
  shape = dict(mesh.shape)
  if shape.get("context", 1) == 1 or config.model.attention_impl == "dense":
    return
  try:
    check_context(
        config.model.context_strategy, num_heads=config.model.num_heads,
        seq_len=SceneGeometry.from_config(config).seq_len,
        context=shape["context"], tensor=shape.get("tensor", 1))
  except ValueError as e:
    raise ValueError(f"mesh {shape}: {e}") from None


def device_work(q_ids, kv_ids, n: int, causal: bool) -> np.ndarray:
  """int [n]: (query, key) pairs the mask allows for each device's queries.

  Static (ids only, key padding ignored): the balance that the token order
  gives context_causal. Sequences are padded to a multiple of n as in
  `attend_context`.
  """
  q_ids = np.asarray(q_ids)
  kv_ids = np.asarray(kv_ids)
  q_ids = np.pad(q_ids, (0, -len(q_ids) % n),
                 constant_values=plan_lib.PAD_Q_GROUP)
  if not causal:
    return np.full((n,), (q_ids.size // n) * kv_ids.size)
  counts = (kv_ids[None, :] <= q_ids[:, None]).sum(axis=1)
  return counts.reshape(n, -1).sum(axis=1)


def _pad_seq(x, length, value=0):
  pad = [(0, 0)] * x.ndim
  pad[1] = (0, length - x.shape[1])
  return jnp.pad(x, pad, constant_values=value)


def _uniform(rows: np.ndarray) -> bool:
  return bool((rows == rows[:1]).all())


def attend_context(q_BxSqxHxD, k_BxSkxHxD, v_BxSkxHxD,
                   mask: mask_lib.GroupMask, *, strategy: str,
                   block_q: int = 512, block_kv: int = 512,
                   local: str = "blockwise",
                   interpret: bool = False) -> jax.Array:
  """Attention with the sequence sharded over 'context'; see the module doc.

  Call under `jax.set_mesh(mesh)` (inside jit); inputs are global arrays.
  `local`: the per-device kernel, 'blockwise' or 'splash' (TPU). Splash
  serves all_gather and ulysses, whose per-device work is one attention
  with a static mask; ring merges partial results by their logsumexp and
  keeps the blockwise kernel, as does any call whose per-device lengths
  splash cannot take. `interpret` runs splash's kernel anywhere (tests).
  """
  n = mesh_axis_size(AXIS)
  batch, q_len, heads, _ = q_BxSqxHxD.shape
  kv_len = k_BxSkxHxD.shape[1]
  check_context(strategy, num_heads=heads, seq_len=min(q_len, kv_len),
                context=n, tensor=mesh_axis_size("tensor"))
  splash = local == "splash" and strategy != "ring"
  # Splash takes per-device lengths in multiples of its block (itself a
  # multiple of 128): pad that far (2% at most at scene lengths) with keys
  # never attended.
  unit = n * math.lcm(SPLASH_UNIT, block_q, block_kv) if splash else n
  q_pad, kv_pad = -(-q_len // unit) * unit, -(-kv_len // unit) * unit
  q_ids = np.pad(mask.q_group, (0, q_pad - q_len),
                 constant_values=plan_lib.PAD_Q_GROUP)
  kv_ids = np.pad(mask.kv_group, (0, kv_pad - kv_len),
                  constant_values=plan_lib.PAD_KV_GROUP)
  args = (_pad_seq(q_BxSqxHxD, q_pad), _pad_seq(k_BxSkxHxD, kv_pad),
          _pad_seq(v_BxSkxHxD, kv_pad),
          _pad_seq(mask.kv_valid, kv_pad, False))
  fn = {"all_gather": _all_gather, "ring": _ring, "ulysses": _ulysses}
  kernel = None
  if splash:
    kernel = functools.partial(accel.attend_splash, block=block_q,
                               per_device=True, interpret=interpret)
  o = fn[strategy](*args, q_ids, kv_ids, causal=mask.causal, n=n,
                   block_q=block_q, block_kv=block_kv,
                   specs=shard_specs(batch, heads), splash=kernel)
  return o[:, :q_len]


def _real_ids(ids: np.ndarray) -> np.ndarray:
  """Padding's sentinel group ids (outside GroupMask's range) replaced by
  the last real group: padded keys are invalid and padded query rows are
  dropped, so their ids only need to be legal."""
  pad = (ids == plan_lib.PAD_Q_GROUP) | (ids == plan_lib.PAD_KV_GROUP)
  return np.where(pad, ids[~pad].max(), ids).astype(np.int32)


def _shard_map(body, specs, in_kinds, out_kinds, *, check_vma=True):
  """shard_map with specs by kind: x [B,S,H,D], valid [B,S], ids [S], lse.

  `check_vma=False` for a splash body: its pallas_call does not declare how
  its outputs vary over the mesh axes.
  """
  batch_axes, heads_axis = specs
  kinds = {"x": P(batch_axes, AXIS, heads_axis, None),
           "valid": P(batch_axes, AXIS), "ids": P(AXIS),
           "lse": P(batch_axes, heads_axis, AXIS)}
  out = tuple(kinds[k] for k in out_kinds)
  return jax.shard_map(body, in_specs=tuple(kinds[k] for k in in_kinds),
                       out_specs=out[0] if len(out) == 1 else out,
                       check_vma=check_vma)


# --- all_gather ---------------------------------------------------------------
def _all_gather(q, k, v, valid, q_ids, kv_ids, *, causal, n, block_q, block_kv,
                specs, splash=None):
  q_rows = q_ids.reshape(n, -1)
  uniform = _uniform(q_rows)
  # Splash's mask is static, one for all devices: the query ids of the
  # devices must agree, unless the mask ignores them (bidirectional).
  use_splash = splash is not None and (uniform or not causal)
  if use_splash:
    attend = lambda q_l, k, v, valid, _: splash(q_l, k, v, mask_lib.GroupMask(
        _real_ids(q_rows[0]), _real_ids(kv_ids), valid, causal))
  else:
    plan = plan_lib.make_plan(q_rows[:1] if uniform else q_rows, kv_ids,
                              block_q, block_kv, causal)
    kv_ids_all = jnp.asarray(kv_ids)
    attend = lambda q_l, k, v, valid, q_ids_l: blockwise.attend_planned(
        plan, q_l, k, v, valid, None if uniform else (q_ids_l, kv_ids_all))

  def body(q_l, k_l, v_l, valid_l, q_ids_l):
    gather = lambda x: lax.all_gather(x, AXIS, axis=1, tiled=True)
    return attend(q_l, gather(k_l), gather(v_l), gather(valid_l), q_ids_l)

  return _shard_map(body, specs, ("x", "x", "x", "valid", "ids"), ("x",),
                    check_vma=not use_splash)(q, k, v, valid,
                                              jnp.asarray(q_ids))


# --- ulysses ------------------------------------------------------------------
def _ulysses(q, k, v, valid, q_ids, kv_ids, *, causal, n, block_q, block_kv,
             specs, splash=None):
  del n
  if splash is not None:
    attend = lambda q, k, v, valid: splash(q, k, v, mask_lib.GroupMask(
        _real_ids(q_ids), _real_ids(kv_ids), valid, causal))
  else:
    plan = plan_lib.make_plan(q_ids, kv_ids, block_q, block_kv, causal)
    attend = lambda q, k, v, valid: blockwise.attend_planned(plan, q, k, v,
                                                             valid)

  def body(q_l, k_l, v_l, valid_l):
    # [B, S/n, h, D] -> [B, S, h/n, D]: received chunks concatenate in
    # device order, i.e. the global sequence order the plan was made for.
    seq = lambda x: lax.all_to_all(x, AXIS, split_axis=2, concat_axis=1,
                                   tiled=True)
    valid_all = lax.all_gather(valid_l, AXIS, axis=1, tiled=True)
    o = attend(seq(q_l), seq(k_l), seq(v_l), valid_all)
    return lax.all_to_all(o, AXIS, split_axis=1, concat_axis=2, tiled=True)

  return _shard_map(body, specs, ("x", "x", "x", "valid"), ("x",),
                    check_vma=splash is None)(q, k, v, valid)


# --- ring ---------------------------------------------------------------------
def _merge(o_acc, lse_acc, o_s, lse_s):
  """Combines two normalised partial attentions by their logsumexp."""
  lse = jnp.logaddexp(lse_acc, lse_s)
  o = (jnp.exp(lse_acc - lse)[..., None] * o_acc +
       jnp.exp(lse_s - lse)[..., None] * o_s)
  return o, lse


def _ring(q, k, v, valid, q_ids, kv_ids, *, causal, n, block_q, block_kv,
          specs, splash=None):
  q_rows, kv_rows = q_ids.reshape(n, -1), kv_ids.reshape(n, -1)
  # Query and key chunks may differ in length (the KV cache: one shot's
  # queries against the whole history).
  q_chunk, kv_chunk = q_rows.shape[1], kv_rows.shape[1]
  uniform = _uniform(q_rows) and _uniform(kv_rows)
  # Step s: device i holds key chunk (i - s) mod n. One static schedule per
  # step (the union over devices); with uniform chunks all steps share it.
  plans = [plan_lib.make_plan(
      q_rows[:1] if uniform else q_rows,
      kv_rows[:1] if uniform else kv_rows[[(i - s) % n for i in range(n)]],
      block_q, block_kv, causal) for s in range(n)]
  skipped = [s for s, p in enumerate(plans) if p.pairs.shape[0] == 0]
  if skipped:
    _log.debug("ring attention: steps %s need no tiles on any device", skipped)
  p0 = plans[0]
  shift = [(i, (i + 1) % n) for i in range(n)]
  rotate = lambda tree: jax.tree.map(lambda x: lax.ppermute(x, AXIS, shift),
                                     tree)

  def pad_local(q_l, k_l, v_l, valid_l, q_ids_l, kv_ids_l):
    valid_l = jnp.pad(valid_l, ((0, 0), (0, p0.kv_len_pad - kv_chunk)),
                      constant_values=False)
    return (blockwise.to_padded_bhsd(q_l, p0.q_len_pad),
            blockwise.to_padded_bhsd(k_l, p0.kv_len_pad),
            blockwise.to_padded_bhsd(v_l, p0.kv_len_pad), valid_l,
            *plan_lib.pad_ids(p0, q_ids_l, kv_ids_l))

  def step_ids(q_ids_l, kv_ids_l):
    return None if uniform else (q_ids_l, kv_ids_l)

  def fwd_body(*local):
    q_l, k_l, v_l, valid_l, q_ids_l, kv_ids_l = pad_local(*local)
    o = jnp.zeros_like(q_l, dtype=jnp.float32)
    lse = jnp.full(o.shape[:-1], blockwise.MASK_VALUE, jnp.float32) + (
        jnp.zeros_like(o[..., 0]))
    kv = (k_l, v_l, valid_l, kv_ids_l)
    for s, plan in enumerate(plans):
      # Send first: the transfer of the next chunk overlaps this compute.
      nxt = rotate(kv) if s < n - 1 else None
      if plan.pairs.shape[0]:
        o_s, lse_s = blockwise.forward(
            plan, q_l, kv[0], kv[1], kv[2], step_ids(q_ids_l, kv[3]),
            f32_out=True)
        o, lse = _merge(o, lse, o_s, lse_s)
      kv = nxt
    o = jnp.swapaxes(o[:, :, :q_chunk], 1, 2).astype(q_l.dtype)
    return o, lse[:, :, :q_chunk]

  def bwd_body(q_l, k_l, v_l, valid_l, q_ids_l, kv_ids_l, o_l, lse_l, do_l):
    q_l, k_l, v_l, valid_l, q_ids_l, kv_ids_l = pad_local(
        q_l, k_l, v_l, valid_l, q_ids_l, kv_ids_l)
    o_l = blockwise.to_padded_bhsd(o_l, p0.q_len_pad)
    do_l = blockwise.to_padded_bhsd(do_l, p0.q_len_pad)
    # Tile-padding rows have o = do = 0; lse 0 keeps exp() finite there.
    lse_l = jnp.pad(lse_l, ((0, 0), (0, 0), (0, p0.q_len_pad - q_chunk)))
    dq = jnp.zeros_like(q_l, dtype=jnp.float32)
    dkv = (jnp.zeros_like(k_l, dtype=jnp.float32),
           jnp.zeros_like(v_l, dtype=jnp.float32))
    kv = (k_l, v_l, valid_l, kv_ids_l)
    for s, plan in enumerate(plans):
      if plan.pairs.shape[0]:
        dq_s, dk_s, dv_s = blockwise.backward(
            plan, q_l, kv[0], kv[1], kv[2], o_l, lse_l, do_l,
            ids=step_ids(q_ids_l, kv[3]), f32_out=True)
        dq = dq + dq_s
        dkv = (dkv[0] + dk_s, dkv[1] + dv_s)
      # The key chunk's gradients travel with it; the n-th hop takes them
      # home (k and v themselves are no longer needed then).
      if s < n - 1:
        kv, dkv = rotate((kv, dkv))
      else:
        dkv = rotate(dkv)
    back = lambda x, like, chunk: jnp.swapaxes(x[:, :, :chunk], 1, 2).astype(
        like.dtype)
    return (back(dq, q_l, q_chunk), back(dkv[0], k_l, kv_chunk),
            back(dkv[1], v_l, kv_chunk))

  fwd = _shard_map(fwd_body, specs, ("x", "x", "x", "valid", "ids", "ids"),
                   ("x", "lse"))
  bwd = _shard_map(bwd_body, specs, ("x", "x", "x", "valid", "ids", "ids",
                                     "x", "lse", "x"), ("x", "x", "x"))

  @jax.custom_vjp
  def ring(q, k, v, valid, q_ids, kv_ids):
    return fwd(q, k, v, valid, q_ids, kv_ids)[0]

  def ring_fwd(q, k, v, valid, q_ids, kv_ids):
    o, lse = fwd(q, k, v, valid, q_ids, kv_ids)
    return o, (q, k, v, valid, q_ids, kv_ids, o, lse)

  def ring_bwd(res, do):
    dq, dk, dv = bwd(*res, do)
    return dq, dk, dv, None, None, None

  ring.defvjp(ring_fwd, ring_bwd)
  return ring(q, k, v, valid, jnp.asarray(q_ids), jnp.asarray(kv_ids))
