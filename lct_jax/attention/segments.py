"""Attention over a sequence given as segments of runs, in any mesh.

The model's tokens come in segments of equal runs: video slots [B, V, T]
(one run of T tokens per shot) and text slots [B, G, L] (one run per
group); each run belongs to one group. `attend_segments` takes the query
and key segments with their group ids (and the keys' validity), lays them
out in context-parallel order for the mesh it is traced under
(`striping`), builds the group mask over that order, attends, and gives
each query segment its outputs back in its own shape. The caller names
logical axes only; how many devices share the sequence is found here.

Keys may hold more runs than queries: the KV cache's new shot (one video
run, one text run) against its whole history.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import numpy as np

from lct_jax.attention import context, striping
from lct_jax.attention.dispatch import attend
from lct_jax.attention.mask import GroupMask
from lct_jax.parallel.logical import constrain

# The joint sequence: its tokens over the context axis ("length").
JOINT_AXES = ("batch", "length", "act_heads", None)


@dataclasses.dataclass(frozen=True)
class Queries:
  """One query segment: P runs of R tokens, run p in group groups_P[p]."""
  x_BxPxRxHxD: jax.Array
  groups_P: np.ndarray            # static
  axes: tuple | None = None       # logical axes of x (a constraint), or none


@dataclasses.dataclass(frozen=True)
class Keys:
  """One key segment: keys and values [B, P, R, H, D] with their groups and
  which tokens are real (False: padding, never attended)."""
  k_BxPxRxHxD: jax.Array
  v_BxPxRxHxD: jax.Array
  groups_P: np.ndarray            # static
  valid_BxPxR: jax.Array
  axes: tuple | None = None


def _run_ids(groups_P, runs: int, run: int) -> np.ndarray:
  """Static group id of every token of a segment, [1, P, R]."""
  groups_P = np.asarray(groups_P, np.int32)
  if groups_P.shape != (runs,):
    raise ValueError(f"a segment of {runs} runs has group ids of shape "
                     f"{groups_P.shape}; expected ({runs},)")
  return np.broadcast_to(groups_P[None, :, None], (1, runs, run))


def _maybe_constrain(x, axes):
  return x if axes is None else constrain(x, axes)


def attend_segments(queries: Sequence[Queries], keys: Sequence[Keys], *,
                    causal: bool, impl: str = "auto", block_q: int = 512,
                    block_kv: int = 512,
                    context_strategy: str = "all_gather") -> list[jax.Array]:
  """One attention of all query segments over all key segments.

  q attends k iff k is valid and (not causal or group(k) <= group(q)).
  Returns one output per query segment, [B, P, R, H, D] in its shape.
  """
  n = context.mesh_axis_size(context.AXIS)
  joint = lambda xs: constrain(striping.stripe(xs, n), JOINT_AXES)
  q = joint([_maybe_constrain(s.x_BxPxRxHxD, s.axes) for s in queries])
  k = joint([_maybe_constrain(s.k_BxPxRxHxD, s.axes) for s in keys])
  v = joint([_maybe_constrain(s.v_BxPxRxHxD, s.axes) for s in keys])
  ids = lambda segs, x_of: striping.stripe(
      [_run_ids(s.groups_P, *x_of(s).shape[1:3]) for s in segs], n,
      edge=True)[0]
  mask = GroupMask(
      q_group=ids(queries, lambda s: s.x_BxPxRxHxD),
      kv_group=ids(keys, lambda s: s.k_BxPxRxHxD),
      kv_valid=striping.stripe([s.valid_BxPxR for s in keys], n),
      causal=causal)
  o = attend(q, k, v, mask, impl=impl, block_q=block_q, block_kv=block_kv,
             context_strategy=context_strategy)
  return striping.unstripe(o, [s.x_BxPxRxHxD.shape[1:3] for s in queries],
                           n)
