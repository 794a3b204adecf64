"""The train state: a plain pytree, and how to make one.

Parameters, optimizer state and EMA are plain nested dicts of arrays (from
`nnx.to_pure_dict(nnx.split(model, nnx.Param)[1])`): the pure-functional
boundary. The model's structure (`graphdef`) stays outside, static, and
`nnx.merge(graphdef, params)` rebuilds the module inside the jitted step.
"""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
from flax import nnx

from lct_jax import configlib
from lct_jax.model import MMDiT
from lct_jax.training.optim import optimizer_for


@flax.struct.dataclass
class TrainState:
  step: jax.Array          # int32 scalar: optimizer steps taken
  params: Any              # float32 parameters (nested dict)
  opt_state: Any
  ema_params: Any          # exponential moving average of params
  skipped: jax.Array       # int32 scalar: steps whose update was skipped
                           # because the loss or a gradient was not finite


def init_model(config, seed: int | None = None):
  """-> (graphdef, float32 params as a nested dict); validates `config`."""
  configlib.validate(config)
  seed = config.seed if seed is None else seed
  model = MMDiT(config, rngs=nnx.Rngs(seed))
  graphdef, params = nnx.split(model, nnx.Param)
  return graphdef, nnx.to_pure_dict(params)


def abstract_model(config):
  """(graphdef, params as ShapeDtypeStructs): no memory allocated;
  validates `config`."""
  configlib.validate(config)
  model = nnx.eval_shape(lambda: MMDiT(config, rngs=nnx.Rngs(0)))
  graphdef, params = nnx.split(model, nnx.Param)
  return graphdef, nnx.to_pure_dict(params)


def count_params(params) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))


def create_train_state(config, params) -> TrainState:
  tx = optimizer_for(config).tx
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(params),
                    ema_params=jax.tree.map(jnp.copy, params),
                    skipped=jnp.zeros((), jnp.int32))
