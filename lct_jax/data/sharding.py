"""Per-process numpy batches -> global jax.Arrays sharded over the batch axes.

Dimension 0 (scenes) is split over the mesh axes of the logical 'batch'
rule, `('fsdp', 'data')` (see `lct_jax.parallel.logical` for why that order);
all other dimensions are replicated. Each process passes only its own share
(`make_pipeline` gives it); jax assembles the global array without copying
between hosts.
"""
from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from lct_jax.parallel import logical_to_spec


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Dimension 0 over the batch axes; the rest replicated."""
  return NamedSharding(mesh, logical_to_spec(("batch",)))


def batch_shards(mesh: Mesh) -> int:
  """How many ways dimension 0 is split."""
  axes = logical_to_spec(("batch",))[0]
  axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
  return math.prod(mesh.shape[a] for a in axes)


def to_global_arrays(batch: dict[str, np.ndarray],
                     mesh: Mesh) -> dict[str, jax.Array]:
  """This process's batch -> global arrays of `process_count` x its size."""
  sharding = batch_sharding(mesh)
  shards = batch_shards(mesh)
  out = {}
  for key, local in batch.items():
    global_b = local.shape[0] * jax.process_count()
    if global_b % shards:
      raise ValueError(
          f"batch[{key!r}]: global batch {global_b} is not divisible by the "
          f"{shards} batch shards of mesh {dict(mesh.shape)} (axes "
          f"{logical_to_spec(('batch',))[0]})")
    out[key] = jax.make_array_from_process_local_data(sharding,
                                                      np.asarray(local))
  return out
