"""A trained model from a work directory: its config and its weights.

`<workdir>/config.json` (written by train.py) is the run's config; the
newest good checkpoint under `<workdir>/checkpoints/` gives the parameters
(raw or EMA), restored with the training loop's own `Checkpointer`
(checksums checked) straight into the shardings of the mesh sampling will
run on (one device by default), so no device ever holds the whole model
unless the mesh says so.
"""
from __future__ import annotations

import json
import os

import jax
import ml_collections

from lct_jax import configlib
from lct_jax.parallel import make_mesh
from lct_jax.training import placement
from lct_jax.training.checkpoint import CheckpointError, Checkpointer
from lct_jax.training.state import abstract_model


def overlay(base: ml_collections.ConfigDict, saved: dict, where: str = ""):
  """Saved values onto the current schema (JSON lists back to tuples;
  fields added to the schema since the run keep their defaults)."""
  for key, value in saved.items():
    if key not in base:      # a field since removed from the schema
      # Only those that shaped the model are judged (configlib.REMOVED);
      # others (training-only ones) do not matter to a loaded model.
      name = f"{where}{key}"
      if name in configlib.REMOVED and not configlib.removed_noop(name, value):
        raise CheckpointError(
            f"the run's config has {where}{key}={value!r}, an option this "
            "version no longer has; use the version that trained it")
      continue
    if isinstance(base[key], ml_collections.ConfigDict):
      overlay(base[key], value, f"{where}{key}.")
    elif isinstance(base[key], tuple) and isinstance(value, list):
      base[key] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    else:
      base[key] = value


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise CheckpointError(
        f"--workdir {workdir!r} has no config.json ({path}); is it a "
        "train.py work directory?")
  with open(path) as f:
    saved = json.load(f)
  config = configlib.base_config()
  overlay(config, saved)
  configlib.validate(config)
  return config


def load_model(workdir: str, *, use_ema: bool = True, config=None,
               mesh=None, step: int | None = None):
  """-> (config, graphdef, params, step) from the newest good checkpoint
  (or checkpoint `step`), the parameters placed for `mesh` (None: the
  first device)."""
  config = config or load_config(workdir)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  steps = ([d for d in os.listdir(ckpt_dir) if d.isdigit()]
           if os.path.isdir(ckpt_dir) else [])
  if not steps:
    raise CheckpointError(f"--workdir {workdir!r} has no checkpoint "
                          f"(nothing under {ckpt_dir}); train first")
  if mesh is None:
    mesh = make_mesh(dict(data=1, fsdp=1, context=1, tensor=1),
                     jax.devices()[:1])
  abstract = placement.abstract_state(config)
  target = placement.with_shape_dtype_shardings(
      abstract, placement.state_shardings(config, mesh, abstract))
  ckpt = Checkpointer(workdir, async_save=False)
  try:
    # The model state only: sampling does not need (and, after a
    # multi-process run, could not use) the input-iterator states.
    restored = (ckpt.restore_latest(target, config, with_data=False)
                if step is None else
                ckpt.restore_step(step, target, config, with_data=False))
  finally:
    ckpt.close()
  if restored is None:
    raise CheckpointError(f"no usable checkpoint under {ckpt_dir}")
  state = restored["state"]
  graphdef, _ = abstract_model(config)
  params = state.ema_params if use_ema else state.params
  return config, graphdef, params, restored["step"]
