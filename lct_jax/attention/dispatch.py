"""One entry point for attention; picks a kernel by name (docs/design.md section 6).

The model calls `attend` only, so kernels can be added (cuDNN on GPU, splash
on TPU with the shot staircase as a block mask) without touching it.
"""
import logging

import jax
import jax.numpy as jnp

from lct_jax.attention import accel
from lct_jax.attention import blockwise
from lct_jax.attention import context
from lct_jax.attention import dense
from lct_jax.attention import mask as mask_lib

IMPLS = ("auto", "dense", "blockwise", "cudnn", "splash")

_log = logging.getLogger(__name__)
_logged = set()


def _log_once(msg: str, *args) -> None:
  key = msg % args
  if key not in _logged:
    _logged.add(key)
    _log.info(msg, *args)


def resolve_impl(impl: str, q_BxSqxHxD, k_BxSkxHxD) -> str:
  """The kernel a call runs; the fallback rules, in one place.

  'auto': cuDNN on GPU, splash on TPU, where the call fits them (dtype,
  head_dim, lengths); otherwise blockwise, logged once with the reason.
  GPU or TPU is that of the devices the call is compiled for (the active
  mesh's), not the machine's default backend.
  An explicit 'cudnn' or 'splash' that cannot run raises instead.
  """
  reasons = {"cudnn": accel.cudnn_unsupported_reason(q_BxSqxHxD),
             "splash": accel.splash_unsupported_reason(q_BxSqxHxD,
                                                       k_BxSkxHxD)}
  if impl in reasons and reasons[impl] is not None:
    raise ValueError(f"attention impl {impl!r} cannot run here: "
                     f"{reasons[impl]}; use 'auto' or 'blockwise'.")
  if impl != "auto":
    return impl
  backend = accel.target_platform()
  wanted = {"gpu": "cudnn", "tpu": "splash"}.get(backend)
  if wanted is None:
    return "blockwise"
  if reasons[wanted] is None:
    return wanted
  _log_once("attention impl 'auto': %s unavailable (%s); using blockwise",
            wanted, reasons[wanted])
  return "blockwise"


def _check_inputs(q_BxSqxHxD, k_BxSkxHxD, v_BxSkxHxD,
                  mask: mask_lib.GroupMask) -> None:
  """Raises ValueError naming the first mismatch; runs before any tracing."""
  if not isinstance(mask, mask_lib.GroupMask):
    raise ValueError(f"mask must be a GroupMask, got {type(mask).__name__}.")
  for name, x in (("q", q_BxSqxHxD), ("k", k_BxSkxHxD), ("v", v_BxSkxHxD)):
    if x.ndim != 4:
      raise ValueError(
          f"{name} must have rank 4 [batch, seq, heads, head_dim], got shape "
          f"{x.shape}.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise ValueError(f"{name} must be floating point, got {x.dtype}.")
  if k_BxSkxHxD.shape != v_BxSkxHxD.shape:
    raise ValueError(
        f"k and v must have the same shape, got k {k_BxSkxHxD.shape} and "
        f"v {v_BxSkxHxD.shape}.")
  (b, _, h, d), (bk, _, hk, dk) = q_BxSqxHxD.shape, k_BxSkxHxD.shape
  for what, qs, ks in (("batch", b, bk), ("heads", h, hk),
                       ("head_dim", d, dk)):
    if qs != ks:
      raise ValueError(
          f"q and k disagree on {what}: q {q_BxSqxHxD.shape}, "
          f"k {k_BxSkxHxD.shape}.")
  mask.validate(batch=b, q_len=q_BxSqxHxD.shape[1],
                kv_len=k_BxSkxHxD.shape[1])


def attend(q_BxSqxHxD: jax.Array, k_BxSkxHxD: jax.Array,
           v_BxSkxHxD: jax.Array, mask: mask_lib.GroupMask, *,
           impl: str = "auto", block_q: int = 512,
           block_kv: int = 512,
           context_strategy: str = "ring") -> jax.Array:
  """Scaled dot-product attention under a group mask.

  Softmax scale 1/sqrt(D); logits and softmax statistics in float32 whatever
  the input dtype; output in q's dtype. Query rows with no attendable key
  output exactly 0 and get zero (finite) gradients.

  Args:
    q_BxSqxHxD, k_BxSkxHxD, v_BxSkxHxD: queries, keys and values.
    mask: who may attend whom (`GroupMask`).
    impl: 'dense' (reference, quadratic memory), 'blockwise' (flash-style,
      linear memory, skips masked tiles), 'cudnn' (GPU), 'splash' (TPU) or
      'auto' (see `resolve_impl`).
    block_q: query tile length of the blockwise kernel.
    block_kv: key tile length of the blockwise kernel.
    context_strategy: how to attend when traced under a mesh whose
      'context' axis is > 1: 'all_gather', 'ring' or 'ulysses' (see
      `context.py`); the local kernel is then splash on TPU where the
      strategy and lengths allow (`context.attend_context`), else
      blockwise. 'dense' is left to XLA's partitioner instead (a
      reference, not a strategy).
  """
  if impl not in IMPLS:
    raise ValueError(f"Unknown attention impl {impl!r}; expected one of "
                     f"{IMPLS}.")
  _check_inputs(q_BxSqxHxD, k_BxSkxHxD, v_BxSkxHxD, mask)
  if impl != "dense" and context.mesh_axis_size(context.AXIS) > 1:
    # Per device: splash on TPU (all_gather, ulysses), else blockwise.
    local = ("splash" if impl in ("auto", "splash")
             and accel.target_platform() == "tpu" else "blockwise")
    return context.attend_context(q_BxSqxHxD, k_BxSkxHxD, v_BxSkxHxD, mask,
                                  strategy=context_strategy, block_q=block_q,
                                  block_kv=block_kv, local=local)
  impl = resolve_impl(impl, q_BxSqxHxD, k_BxSkxHxD)
  if impl == "cudnn":
    return accel.attend_key_prefixes(q_BxSqxHxD, k_BxSkxHxD, v_BxSkxHxD, mask,
                                     implementation="cudnn")
  if impl == "splash":
    return accel.attend_splash(q_BxSqxHxD, k_BxSkxHxD, v_BxSkxHxD, mask,
                               block=block_q)
  if impl == "dense":
    return dense.attend_dense(q_BxSqxHxD, k_BxSkxHxD, v_BxSkxHxD, mask)
  return blockwise.attend_blockwise(q_BxSqxHxD, k_BxSkxHxD, v_BxSkxHxD, mask,
                                    block_q=block_q, block_kv=block_kv)
