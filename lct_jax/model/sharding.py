"""Parameter shardings from the logical names the model declares.

Every parameter is created with logical axis names (`out_sharding` metadata,
see `lct_jax.model.layers`); `RULES` maps them to mesh axes. A mesh axis that
does not divide the dimension is dropped for that parameter (replicated
there) rather than failing, so one table serves every model size.
"""
from __future__ import annotations

import math

import jax
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from lct_jax.model.mmdit import MMDiT
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


def fit_spec(spec: P, shape, mesh) -> P:
  """Drops mesh axes that do not divide the dimension they shard."""
  out = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    if axes is None:
      out.append(None)
      continue
    size = math.prod(mesh.shape[a] for a in
                     (axes if isinstance(axes, tuple) else (axes,)))
    out.append(axes if dim % size == 0 else None)
  return P(*out)


def param_shardings(config, params, mesh):
  """NamedSharding per parameter (params: arrays or ShapeDtypeStructs)."""
  names = logical_param_names(config)
  return jax.tree.map(
      lambda n, x: NamedSharding(mesh, fit_spec(logical_to_spec(n), x.shape, mesh)),
      names, params, is_leaf=lambda n: isinstance(n, tuple))


def _masked(x) -> bool:
  """A leaf that an optax partition masked out (a subtree whose update rule
  does not hold a moment for this parameter)."""
  return isinstance(x, optax.MaskedNode)


def _map_params_like(state, params, on_param, aux, on_other):
  """Applies `on_param(leaf, aux leaf)` to every leaf of each subtree of
  `state` shaped like `params` (params, EMA, each update rule's moments;
  under `optim.name = muon` the moments of each part are shaped like the
  params with the other part's leaves masked) and `on_other` to every other
  leaf. `aux` is a tree like `params`."""
  params_def = jax.tree.structure(params)
  is_params = lambda x: (not hasattr(x, "shape") and not _masked(x) and
                         jax.tree.structure(x, is_leaf=_masked) == params_def)

  def on_subtree(x):
    return jax.tree.map(lambda leaf, a: leaf if _masked(leaf)
                        else on_param(leaf, a), x, aux, is_leaf=_masked)

  return jax.tree.map(lambda x: on_subtree(x) if is_params(x) else on_other(x),
                      state, is_leaf=is_params)


def state_shardings(config, state, mesh):
  """Shardings of a whole TrainState (arrays or ShapeDtypeStructs).

  Parameters, their EMA and every optimizer subtree shaped like the
  parameters (masked leaves aside) share the parameter shardings; scalars
  such as step counts are replicated.
  """
  p_sh = param_shardings(config, state.params, mesh)
  replicated = NamedSharding(mesh, P())
  return _map_params_like(state, state.params, lambda _, sh: sh, p_sh,
                          lambda _: replicated)


def constrain_state(config, state):
  """Pins a traced TrainState to the parameter shardings of the active mesh.

  Without it the partitioner may hand back an updated parameter in another
  sharding than it came in (seen: an fsdp-sharded bias returned replicated),
  which silently undoes FSDP from one step to the next. No-op off a mesh.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh is None or mesh.empty:
    return state
  names = logical_param_names(config)
  specs = jax.tree.map(
      lambda n, x: fit_spec(logical_to_spec(n), x.shape, mesh), names,
      state.params, is_leaf=lambda n: isinstance(n, tuple))
  return _map_params_like(state, state.params,
                          jax.lax.with_sharding_constraint, specs,
                          lambda x: x)
