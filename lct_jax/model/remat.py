"""Rematerialisation policies by name (config `model.remat_policy`)."""
from __future__ import annotations

import jax

POLICIES = {
    # Save nothing: recompute each block in the backward (least memory).
    "full": jax.checkpoint_policies.nothing_saveable,
    # Save matmul outputs: less recompute, more memory.
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
NAMES = ("none",) + tuple(POLICIES)      # what `model.remat_policy` accepts


def remat(fn, policy: str):
  """Wraps a scan body in `jax.checkpoint` unless the policy is 'none'."""
  if policy == "none":
    return fn
  if policy not in POLICIES:
    raise ValueError(f"model.remat_policy={policy!r} is not one of "
                     f"{NAMES}")
  return jax.checkpoint(fn, policy=POLICIES[policy], prevent_cse=False)
