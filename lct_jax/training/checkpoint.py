"""Checkpoints: orbax CheckpointManager over state, data iterator and meta.

A checkpoint `<workdir>/checkpoints/<step>/` holds three items:
  state  the TrainState (params, optimizer state, EMA, step, skipped count),
         written asynchronously (orbax, OCDBT) from its shards;
  data   each process's input-iterator state, `process_<i>-of-<n>.json`
         (grain's handler): resuming continues with the exact next batch;
  meta   JSON: step, the base RNG key, the config, and a checksum per state
         leaf (uint32 sum of the leaf's bits, the same on any mesh).
Orbax writes a step to a temporary directory and renames it when complete,
so a run killed mid-save leaves the previous checkpoints as they were, and
`max_to_keep` deletes old steps only after a newer one is complete.

On restore the newest step is tried first; one that fails to load or whose
checksums disagree is reported by path, moved to
`<workdir>/corrupt_checkpoints/` (kept, never deleted), and the next older
step is tried. Checkpoints of a different model (its `model` or `scene`
config differs) are an error, not corruption: nothing is moved.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from lct_jax import configlib

STATE, DATA, META = "state", "data", "meta"
# Config sections that fix the parameters' shapes and meaning, less the
# fields that only change how the same model is computed (free to change
# between a save and a resume).
MODEL_SECTIONS = ("model",)
RUNTIME_FIELDS = ("attention_impl", "block_q", "block_kv", "remat_policy",
                  "compute_dtype", "context_strategy")


class CheckpointError(RuntimeError):
  """No usable checkpoint where one is required, or an incompatible one
  (another model, another process layout): reported, nothing moved."""


class CorruptCheckpointError(RuntimeError):
  """A checkpoint whose contents disagree with its own checksums."""


class _IteratorSnapshot:
  """The iterator state taken at save time (saving runs asynchronously, the
  live iterator moves on), in the form grain's checkpoint handler takes."""

  def __init__(self, state: dict | None = None):
    self.state = state

  def get_state(self) -> bytes:
    return json.dumps(self.state).encode()

  def set_state(self, state: bytes) -> None:
    self.state = json.loads(state)

  def start_prefetch(self) -> None:
    pass


@jax.jit
def checksums(tree) -> list[jax.Array]:
  """Per leaf: the uint32 sum (mod 2**32) of its bits; order-free, so the
  same whatever the mesh or the reduction order."""
  def one(x):
    x = jnp.asarray(x)
    if x.dtype.itemsize == 2:
      bits = jax.lax.bitcast_convert_type(x, jnp.uint16).astype(jnp.uint32)
    elif x.dtype.itemsize == 4:
      bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    elif x.dtype == jnp.bool_ or x.dtype.itemsize == 1:
      bits = x.astype(jnp.uint32)
    else:   # 8-byte types: fold both halves
      bits = jax.lax.bitcast_convert_type(x, jnp.uint32).sum(-1)
    return jnp.sum(bits, dtype=jnp.uint32)
  return [one(x) for x in jax.tree.leaves(tree)]


def _host_checksums(tree) -> list[int]:
  return [int(c) for c in jax.device_get(checksums(tree))]


def config_to_dict(config) -> dict:
  return json.loads(config.to_json_best_effort())


class Checkpointer:
  """Saves and restores train state + iterator state + meta under a workdir.

  Args:
    workdir: the run's work directory; checkpoints go to `workdir/checkpoints`.
    keep: how many of the newest checkpoints to keep (None: all).
    async_save: write the state in a background thread.
  """

  def __init__(self, workdir: str, *, keep: int | None = 3,
               async_save: bool = True):
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, "checkpoints")
    self._options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True, create=True)
    self._manager = self._new_manager()

  def _new_manager(self) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        self.directory, options=self._options,
        item_names=(STATE, DATA, META),
        item_handlers={STATE: ocp.StandardCheckpointHandler(),
                       DATA: grain.checkpoint.CheckpointHandler(),
                       META: ocp.JsonCheckpointHandler()})

  # --- saving -----------------------------------------------------------------
  def save(self, state, iterator_state: dict, rng: jax.Array, config) -> int:
    """Starts saving `state` at its step; returns the step. Asynchronous:
    call `wait()` before relying on it (the loop does at exit)."""
    step = int(jax.device_get(state.step))
    meta = {"step": step,
            "rng": np.asarray(jax.random.key_data(rng)).tolist(),
            "config": config_to_dict(config),
            "checksums": _host_checksums(state),
            "time": time.time()}
    self._manager.save(step, force=True, args=ocp.args.Composite(**{
        STATE: ocp.args.StandardSave(state),
        DATA: grain.checkpoint.CheckpointSave(
            _IteratorSnapshot(iterator_state)),
        META: ocp.args.JsonSave(meta)}))
    return step

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def reached_preemption(self, step: int) -> bool:
    """The multi-host preemption sync point (jax.distributed): True on every
    process at the same step once any of them got a preemption notice."""
    return self._manager.reached_preemption(step)

  def close(self) -> None:
    self._manager.close()

  # --- restoring --------------------------------------------------------------
  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def _check_compatible(self, step: int, config) -> None:
    """Raises CheckpointError if the checkpoint is of another model."""
    meta = self._manager.restore(step, args=ocp.args.Composite(**{
        META: ocp.args.JsonRestore()}))[META]
    saved, now = meta["config"], config_to_dict(config)
    # A field added to the schema since the checkpoint was written reads as
    # its default there: old checkpoints stay usable.
    default = config_to_dict(configlib.base_config())
    was = lambda section, k: saved[section].get(
        k, default.get(section, {}).get(k))
    # A field removed since is no difference where it held its no-op value.
    gone = lambda section, k: k not in now[section] and configlib.removed_noop(
        f"{section}.{k}", saved[section][k])
    diff = [f"{section}.{k}" for section in MODEL_SECTIONS
            for k in sorted(set(saved[section]) | set(now[section]))
            if k not in RUNTIME_FIELDS and not gone(section, k)
            and was(section, k) != now[section].get(k)]
    if diff:
      raise CheckpointError(
          f"{self.step_dir(step)} was written for a different model "
          f"(differs in {', '.join(diff)}); resume with the same config, use "
          "another --workdir, or start from it with train.init_from")

  def _check_process_layout(self, step: int) -> None:
    """The data item must hold this process layout's iterator state."""
    data_dir = os.path.join(self.step_dir(step), DATA)
    n = jax.process_count()
    mine = f"process_{jax.process_index()}-of-{n}.json"
    if not os.path.isdir(data_dir) or os.path.exists(
        os.path.join(data_dir, mine)):
      return        # (a missing data item is corruption: the restore says so)
    saved = sorted(f for f in os.listdir(data_dir) if f.startswith("process_"))
    if saved:
      raise CheckpointError(
          f"{self.step_dir(step)} holds input-iterator states for another "
          f"process layout ({', '.join(saved)}) but this run has {n} "
          f"process(es): resume with the same number of processes (each "
          "reads its own slice of the data), or start a new workdir from it "
          "with train.init_from")

  def _restore_step(self, step: int, target, with_data: bool) -> dict:
    items = {STATE: ocp.args.StandardRestore(target),
             META: ocp.args.JsonRestore()}
    if with_data:
      self._check_process_layout(step)
      items[DATA] = grain.checkpoint.CheckpointRestore(_IteratorSnapshot())
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    meta = restored[META]
    state = restored[STATE]
    if _host_checksums(state) != meta["checksums"]:
      raise CorruptCheckpointError(
          "state checksums do not match the saved ones")
    return {"state": state,
            "iterator_state": restored[DATA].state if with_data else None,
            "rng": jax.random.wrap_key_data(
                np.asarray(meta["rng"], np.uint32)),
            "step": meta["step"]}

  def _move_aside(self, step: int) -> str:
    dest = os.path.join(self.workdir, "corrupt_checkpoints",
                        f"{step}-{int(time.time())}")
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(dest), exist_ok=True)
      shutil.move(self.step_dir(step), dest)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"lct_corrupt_{step}")
    self._manager.close()
    self._manager = self._new_manager()
    return dest

  def restore_step(self, step: int, target, config, *,
                   with_data: bool = True) -> dict[str, Any]:
    """Checkpoint `step` exactly (evaluating a run's history); unlike
    `restore_latest`, a missing or corrupt one is an error, not skipped."""
    if step not in self.steps():
      raise CheckpointError(
          f"no checkpoint of step {step} under {self.directory} (it has: "
          f"{', '.join(map(str, self.steps())) or 'none'})")
    self._check_compatible(step, config)
    return self._restore_step(step, target, with_data)

  def restore_latest(self, target, config, *, with_data: bool = True
                     ) -> dict[str, Any] | None:
    """The newest good checkpoint restored onto `target`'s shardings.

    Args:
      target: the TrainState as ShapeDtypeStructs with shardings
        (`placement.with_shape_dtype_shardings`).
      config: the run's config (checked against the checkpoint's model).
      with_data: also restore this process's input-iterator state (a
        checkpoint of another process layout is then an error).

    Returns:
      None if there is no checkpoint, else {state, iterator_state, rng, step}.
    """
    for step in reversed(self.steps()):
      try:
        self._check_compatible(step, config)
        return self._restore_step(step, target, with_data)
      except CheckpointError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        error = e
      dest = self._move_aside(step)
      logging.error("checkpoint %s is corrupt or incomplete (%s: %s); moved "
                    "it to %s and trying the previous one",
                    self.step_dir(step), type(error).__name__,
                    str(error)[:500], dest)
      print(f"WARNING: checkpoint {self.step_dir(step)} is corrupt or "
            f"incomplete ({type(error).__name__}); moved to {dest}, falling "
            "back to the previous checkpoint", flush=True)
    return None


def find_state_dir(path: str) -> str:
  """The params-bearing directory for `train.init_from`.

  `path`: a work directory, its `checkpoints` directory, one step's directory
  (the newest step when not given), or a plain orbax PyTree checkpoint of a
  params dict (what the diffusers converter writes).
  """
  path = os.path.abspath(path)
  if not os.path.exists(path):
    raise CheckpointError(f"train.init_from={path!r} does not exist")
  for base in (path, os.path.join(path, "checkpoints")):
    if not os.path.isdir(base):
      continue
    if os.path.isdir(os.path.join(base, STATE)):        # a step directory
      return os.path.join(base, STATE)
    steps = [int(d) for d in os.listdir(base) if d.isdigit()]
    if steps:
      return os.path.join(base, str(max(steps)), STATE)
  for candidate in (path, os.path.join(path, "params")):
    # A params PyTree; `<dir>/params` is what lct_jax.convert writes.
    if os.path.isfile(os.path.join(candidate, "_METADATA")) or os.path.isfile(
        os.path.join(candidate, "_CHECKPOINT_METADATA")):
      return candidate
  raise CheckpointError(f"no checkpoint under train.init_from={path!r} "
                        "(expected a workdir, its checkpoints/ directory, a "
                        "step directory holding state/, or an orbax params "
                        "checkpoint)")


def load_params(path: str, target_params):
  """Parameters for `train.init_from`, restored onto `target_params`'
  shardings (ShapeDtypeStructs with shardings). A training checkpoint gives
  its `params` (not the EMA; pass the EMA-free state); a params PyTree gives
  itself. Shapes must match the target: a clear error otherwise.
  """
  state_dir = find_state_dir(path)
  checkpointer = ocp.PyTreeCheckpointer()
  saved = checkpointer.metadata(state_dir)
  saved = getattr(saved, "item_metadata", saved)
  saved_tree = getattr(saved, "tree", saved)
  is_state = isinstance(saved_tree, dict) and "params" in saved_tree
  item = {"params": target_params} if is_state else target_params
  restore_args = jax.tree.map(
      lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding, dtype=x.dtype,
                                     global_shape=x.shape), item)
  try:
    restored = checkpointer.restore(state_dir, args=ocp.args.PyTreeRestore(
        item=item, restore_args=restore_args, partial_restore=is_state))
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f"cannot load parameters from {state_dir} for "
                          f"train.init_from ({type(e).__name__}: "
                          f"{str(e)[:800]})") from e
  params = restored["params"] if is_state else restored
  for (kp, got), want in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                             jax.tree.leaves(target_params)):
    if got.shape != want.shape:
      raise CheckpointError(
          f"train.init_from: {jax.tree_util.keystr(kp)} has shape "
          f"{got.shape} in {state_dir} but the config wants {want.shape}")
  return params
