"""One entry point for attention; picks a kernel by name (DESIGN.md section 6).

The model calls `attend` only, so kernels can be added (cuDNN on GPU, splash
on TPU with the shot staircase as a block mask) without touching it.
"""
import jax
import jax.numpy as jnp

from lct_jax.attention import blockwise
from lct_jax.attention import context
from lct_jax.attention import dense
from lct_jax.attention import mask as mask_lib

IMPLS = ("auto", "dense", "blockwise")


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
           context_strategy: str = "all_gather") -> jax.Array:
  """Scaled dot-product attention under a group mask.

  Softmax scale 1/sqrt(D); logits and softmax statistics in float32 whatever
  the input dtype; output in q's dtype. Query rows with no attendable key
  output exactly 0 and get zero (finite) gradients.

  Args:
    q_BxSqxHxD: queries.
    k_BxSkxHxD: keys.
    v_BxSkxHxD: values.
    mask: who may attend whom (`GroupMask`).
    impl: 'dense' (reference, quadratic memory), 'blockwise' (flash-style,
      linear memory, skips masked tiles) or 'auto'.
    block_q: query tile length of the blockwise kernel.
    block_kv: key tile length of the blockwise kernel.
    context_strategy: how to attend when traced under a mesh whose
      'context' axis is > 1: 'all_gather', 'ring' or 'ulysses' (see
      `context.py`); the local kernel is then blockwise. 'dense' is left to
      XLA's partitioner instead (a reference, not a strategy).

  Returns:
    o_BxSqxHxD in q's dtype.
  """
  if impl not in IMPLS:
    raise ValueError(f"Unknown attention impl {impl!r}; expected one of "
                     f"{IMPLS}.")
  _check_inputs(q_BxSqxHxD, k_BxSkxHxD, v_BxSkxHxD, mask)
  if impl == "auto":
    # Accelerator kernels go here, e.g. 'cudnn' when jax.default_backend()
    # == 'gpu' and 'splash' on 'tpu', each with the staircase as a block mask.
    impl = "blockwise"
  if impl != "dense" and context.mesh_axis_size(context.AXIS) > 1:
    return context.attend_context(q_BxSqxHxD, k_BxSkxHxD, v_BxSkxHxD, mask,
                                  strategy=context_strategy, block_q=block_q,
                                  block_kv=block_kv)
  if impl == "dense":
    return dense.attend_dense(q_BxSqxHxD, k_BxSkxHxD, v_BxSkxHxD, mask)
  return blockwise.attend_blockwise(q_BxSqxHxD, k_BxSkxHxD, v_BxSkxHxD, mask,
                                    block_q=block_q, block_kv=block_kv)
