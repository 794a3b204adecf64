"""Logical axis names -> mesh axes: the one table (docs/design.md section 6).

Parameters and activations are annotated with logical names; this table says
where each name lives on the ('data', 'fsdp', 'context', 'tensor') mesh.
Parameter names (`embed`, `heads`, `mlp`, ...) and activation names
(`batch`, `length`, `act_*`) are distinct on purpose: parameters are sharded
over `fsdp` along `embed`, activations are not.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "context", "tensor")

RULES: dict[str, str | tuple[str, ...] | None] = {
    # parameters
    "layers": None,
    "embed": "fsdp",
    "heads": "tensor",
    "mlp": "tensor",
    "modulation": "tensor",
    "vocab": None,
    # activations
    # ('fsdp', 'data'), not ('data', 'fsdp'): with the latter, jax 0.10.2's
    # partitioner (Shardy, CPU) returned wrong text-stream outputs for a
    # batch of 4 on a (2, 2, 1, 2) mesh with fsdp-sharded params (relative
    # error 8e-2; tests/test_parallel.py keeps that case). Same devices,
    # other order; 18 batch x mesh combinations checked exact.
    "batch": ("fsdp", "data"),
    "length": "context",
    "act_embed": None,
    "act_heads": "tensor",
    "act_mlp": "tensor",
}


def logical_to_spec(names: Sequence[str | None] | None,
                    rules: dict | None = None) -> P:
  """('batch', 'length', None) -> P(('data', 'fsdp'), 'context', None)."""
  rules = RULES if rules is None else rules
  unknown = [n for n in names or () if n is not None and n not in rules]
  if unknown:
    raise KeyError(f"logical axis {unknown[0]!r} has no rule; known: "
                   f"{sorted(rules)}")
  return P(*(None if n is None else rules[n] for n in names or ()))


def _mesh_active() -> bool:
  mesh = jax.sharding.get_abstract_mesh()
  return mesh is not None and not mesh.empty


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """Sharding constraint by logical names; a no-op outside a mesh."""
  if not _mesh_active():
    return x
  return jax.lax.with_sharding_constraint(x, logical_to_spec(names))


def shard_specs(batch: int, heads: int):
  """(batch axes, heads axis) of the active mesh for a per-device kernel's
  shard_map specs; None where it won't fit (that dimension replicated)."""
  mesh = jax.sharding.get_abstract_mesh()
  batch_axes = RULES["batch"]
  batch_axes = batch_axes if isinstance(batch_axes, tuple) else (batch_axes,)
  batch_axes = tuple(a for a in batch_axes if a in mesh.axis_names)
  if batch % math.prod(mesh.shape[a] for a in batch_axes):
    batch_axes = None      # e.g. a sampler's batch of 1: replicate
  heads_axis = RULES["act_heads"]
  if heads_axis not in mesh.axis_names or heads % mesh.shape[heads_axis]:
    heads_axis = None
  return batch_axes or None, heads_axis
