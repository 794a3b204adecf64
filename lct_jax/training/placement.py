"""Where the train state lives: its shardings on a mesh, and a sharded init.

Parameters and EMA follow `param_shardings` (FSDP over 'fsdp', heads / MLP
over 'tensor'); optimizer moments mirror their parameter's sharding, and
scalars (step, counts) are replicated (`model.sharding.state_shardings`). The
state is created directly in its shardings (a jitted init with
`out_shardings`), so no device ever holds the whole model, and the same
shardings are the restore target of a checkpoint: a checkpoint saved under one
mesh restores onto another.
"""
from __future__ import annotations

import jax
from jax.sharding import Mesh

from lct_jax.model import sharding as param_sharding
from lct_jax.training.state import (TrainState, abstract_model,
                                    create_train_state, init_model)


def abstract_state(config) -> TrainState:
  """The train state as ShapeDtypeStructs (no memory allocated)."""
  _, params = abstract_model(config)
  return jax.eval_shape(lambda p: create_train_state(config, p), params)


def state_shardings(config, mesh: Mesh, abstract: TrainState | None = None
                    ) -> TrainState:
  """NamedSharding for every leaf of the train state on `mesh`."""
  abstract = abstract_state(config) if abstract is None else abstract
  return param_sharding.state_shardings(config, abstract, mesh)


def init_state(config, mesh: Mesh, params=None) -> TrainState:
  """A fresh train state, created in its shardings.

  `params` (e.g. from `train.init_from`): start from these parameters (EMA
  too) with a new optimizer state; None draws them from `config.seed`.
  """
  shardings = state_shardings(config, mesh)

  def make(params):
    if params is None:
      _, params = init_model(config)
    return create_train_state(config, params)

  with jax.set_mesh(mesh):
    if params is not None:
      params = jax.device_put(params, shardings.params)
    return jax.jit(make, out_shardings=shardings)(params)


def with_shape_dtype_shardings(abstract: TrainState,
                               shardings: TrainState) -> TrainState:
  """ShapeDtypeStructs carrying shardings: a checkpoint restore target."""
  return jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      abstract, shardings)

