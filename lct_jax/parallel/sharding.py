"""Parameter shardings from the logical names the model declares.

Every parameter is created with logical axis names (`out_sharding` metadata,
see `lct_jax.model.layers`); `RULES` maps them to mesh axes. A mesh axis that
does not divide the dimension is dropped for that parameter (replicated
there) rather than failing, so one table serves every model size.
"""
from __future__ import annotations

import jax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from lct_jax.model import MMDiT
from lct_jax.parallel.logical import logical_to_spec


def logical_param_names(config):
  """Nested dict (like the params) of logical-name tuples, one per param."""
  # jax.eval_shape, not nnx.eval_shape: the latter turns the logical names
  # into shardings when a mesh is active, and they are not mesh axes.
  state = jax.eval_shape(
      lambda: nnx.split(MMDiT(config, rngs=nnx.Rngs(0)), nnx.Param)[1])

  def names(var):
    meta = var.get_metadata()
    return tuple(meta.get("out_sharding") or (None,) * var.ndim)

  return nnx.to_pure_dict(jax.tree.map(
      names, state, is_leaf=lambda x: isinstance(x, nnx.Variable)))


def _fit(spec: P, shape, mesh) -> P:
  """Drops mesh axes that do not divide the dimension they shard."""
  out = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    if axes is None:
      out.append(None)
      continue
    axes_t = axes if isinstance(axes, tuple) else (axes,)
    size = 1
    for a in axes_t:
      size *= mesh.shape[a]
    out.append(axes if dim % size == 0 else None)
  return P(*out)


def param_shardings(config, params, mesh):
  """NamedSharding per parameter (params: arrays or ShapeDtypeStructs)."""
  names = logical_param_names(config)
  return jax.tree.map(
      lambda n, x: NamedSharding(mesh, _fit(logical_to_spec(n), x.shape, mesh)),
      names, params, is_leaf=lambda n: isinstance(n, tuple))
