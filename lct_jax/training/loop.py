"""The training loop: mesh, state, data, checkpoints, logging, preemption.

`train(config, workdir)` runs (or resumes) a run in `workdir`:
  1. checks everything that can be checked before compiling: the config, the
     work directory's permissions, the mesh against the devices, the batch
     against the mesh's batch shards and the processes;
  2. restores the newest good checkpoint of the workdir (train state onto
     this mesh's shardings, data iterator, RNG), or starts from
     `train.init_from` parameters (new optimizer state), or from scratch;
  3. steps: per-process batch -> global sharded arrays -> jitted step, with
     the step's RNG `fold_in(key(seed), step)`, so a resumed run draws
     exactly what an uninterrupted one does;
  4. logs (process 0): a progress bar, a log line and TensorBoard scalars
     every `train.log_every` steps; checkpoints every
     `train.checkpoint_every` steps, at the end, and on preemption
     (SIGTERM, or the multi-host preemption sync point) before returning.
     With `train.sample_every`, sample videos of a fixed validation scene
     go to `<workdir>/samples/<step>/` (lct_jax/sampling/periodic.py).
A non-finite loss or gradient never updates the state (the step skips it);
`train.on_nonfinite='stop'` then raises, `'skip'` counts and goes on.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import time

import jax
import numpy as np
from tqdm import tqdm

from lct_jax import configlib
from lct_jax.attention.context import check_mesh
from lct_jax.data import pipeline
from lct_jax.data import sharding as data_sharding
from lct_jax.parallel import make_mesh
from lct_jax.training import placement
from lct_jax.training.checkpoint import Checkpointer, load_params
from lct_jax.training.state import abstract_model, count_params
from lct_jax.training.step import make_train_step
from lct_jax.training.tensorboard import SummaryWriter


class NonFiniteLossError(FloatingPointError):
  """The loss or gradient became NaN/Inf with train.on_nonfinite='stop'."""


@dataclasses.dataclass
class RunResult:
  step: int                       # optimizer steps done
  last_loss: float | None
  preempted: bool = False
  skipped: int = 0                # steps skipped as non-finite
  bad_records: int = 0            # input records skipped as bad
  resumed_from: int | None = None


def check_workdir(workdir: str) -> str:
  """Creates the work directory; raises naming it if it is not writable."""
  path = os.path.abspath(workdir)
  try:
    os.makedirs(path, exist_ok=True)
    probe = os.path.join(path, f".write_test_{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise PermissionError(f"--workdir {path!r} is not a writable directory "
                          f"({e.strerror or e})") from e
  return path


def check_batch(config, mesh) -> None:
  """The global batch must split over the batch shards and the processes."""
  B, shards = config.train.batch_size, data_sharding.batch_shards(mesh)
  if B % shards:
    raise ValueError(
        f"train.batch_size={B} is not divisible by the {shards} batch shards "
        f"of the mesh {dict(mesh.shape)} (data x fsdp)")
  if B % jax.process_count():
    raise ValueError(f"train.batch_size={B} is not divisible by "
                     f"{jax.process_count()} processes")


class _PreemptionSignal:
  """SIGTERM sets a flag (checked between steps) instead of killing."""

  def __init__(self):
    self.received = False
    self._previous = None

  def __enter__(self):
    def handler(signum, frame):
      del frame
      self.received = True
      logging.warning("signal %d: saving a checkpoint and exiting", signum)
    try:
      self._previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:      # not the main thread: rely on the sync point
      self._previous = None
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


class _Metrics:
  """Host side of the step metrics: lagged fetch, NaN policy, averages."""

  def __init__(self, config, is_main: bool):
    self.config, self.is_main = config, is_main
    self.pending: list[tuple[int, dict]] = []
    self.window: list[dict] = []
    self.last_loss = None

  def add(self, step: int, metrics: dict) -> None:
    self.pending.append((step, metrics))

  def drain(self, keep_last: int = 0) -> None:
    """Fetches all but the newest `keep_last` steps' metrics and checks
    them (keeping one in flight lets the device run ahead)."""
    while len(self.pending) > keep_last:
      step, m = self.pending.pop(0)
      m = {k: np.asarray(v).item() for k, v in jax.device_get(m).items()}
      if not m["finite"]:
        if self.config.train.on_nonfinite == "stop":
          raise NonFiniteLossError(
              f"step {step}: loss {m['loss']}, grad norm {m['grad_norm']} "
              "(not finite). The update was not applied and nothing after "
              "it was saved; the newest checkpoint is good. "
              "(train.on_nonfinite='skip' skips such steps instead)")
        logging.warning("step %d: non-finite loss %s / grad norm %s; update "
                        "skipped", step, m["loss"], m["grad_norm"])
      else:
        self.last_loss = m["loss"]
      self.window.append(m)

  def summary(self) -> dict[str, float]:
    """Means over the window since the last call (finite steps only)."""
    ok = [m for m in self.window if m["finite"]] or self.window
    out = {}
    for k in ("loss", "grad_norm", "lr"):
      out[k] = float(np.mean([m[k] for m in ok]))
    for k in [k for k in self.window[0] if k.startswith("loss_t")]:
      shots = sum(m["shots_t" + k[6:]] for m in ok)
      if shots:
        out[k] = float(sum(m[k] * m["shots_t" + k[6:]] for m in ok) / shots)
    self.window = []
    return out


def _progress(total: int, initial: int, enabled: bool):
  return tqdm(total=total, initial=initial, disable=not enabled,
              dynamic_ncols=True, unit="step", file=sys.stderr,
              mininterval=1.0)


def _initial_state(config, mesh, ckpt: Checkpointer, abstract, shardings):
  """(state, iterator state | None, rng, resumed_from step | None)."""
  target = placement.with_shape_dtype_shardings(abstract, shardings)
  restored = ckpt.restore_latest(target, config)
  if restored is not None:
    return (restored["state"], restored["iterator_state"], restored["rng"],
            restored["step"])
  rng = jax.random.key(config.seed)
  if config.train.init_from:
    params = load_params(config.train.init_from, target.params)
    logging.info("initialised parameters from %s", config.train.init_from)
    return placement.init_state(config, mesh, params), None, rng, None
  return placement.init_state(config, mesh), None, rng, None


def train(config, workdir: str, *, progress: bool = True,
          log_batches: bool = False,
          signal_at_step: tuple[int, int] | None = None,
          write_samples=None) -> RunResult:
  """Runs or resumes training in `workdir`; see the module docstring.

  Args:
    config: the run's config (validated here).
    workdir: checkpoints, TensorBoard events (`tb/`), `config.json`.
    progress: show a progress bar (process 0).
    log_batches: append each step's scene ids to `batches-<process>.jsonl`.
    signal_at_step: (step, signal): after that step, send the signal to this
      process (testing preemption and crashes).
    write_samples: for `train.sample_every`, a function (config, graphdef,
      state, workdir, step, mesh) -> output folder, called in every process
      (`lct_jax.sampling.periodic.write_samples`, which train.py passes;
      sampling sits above training, so the loop does not import it).
  """
  configlib.validate(config)
  if config.train.sample_every and write_samples is None:
    raise ValueError(
        f"train.sample_every={config.train.sample_every} needs a sampler: "
        "pass write_samples=lct_jax.sampling.periodic.write_samples (train.py "
        "does) or set train.sample_every=0")
  workdir = check_workdir(workdir)
  mesh = make_mesh(config.mesh)
  check_batch(config, mesh)
  check_mesh(config, mesh)          # context strategy vs heads and tokens
  is_main = jax.process_index() == 0
  t = config.train

  graphdef, _ = abstract_model(config)
  abstract = placement.abstract_state(config)
  shardings = placement.state_shardings(config, mesh, abstract)
  ckpt = Checkpointer(workdir, keep=t.keep_checkpoints or None,
                      async_save=t.async_checkpoints)
  batches = pipeline.make_pipeline(config)
  writer = SummaryWriter(os.path.join(workdir, "tb")) if is_main else None
  try:
    state, it_state, rng, resumed = _initial_state(config, mesh, ckpt,
                                                   abstract, shardings)
    if it_state is not None:
      batches.set_state(it_state)
    start = int(jax.device_get(state.step))
    if is_main:
      with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=1))
      print(f"{'resumed from step ' + str(start) if resumed is not None else 'new run'}"
            f" in {workdir}: {count_params(abstract.params) / 1e6:.2f}M "
            f"params, stage {t.stage}, mask {config.model.attention_mask}, "
            f"mesh {dict(mesh.shape)}, {jax.process_count()} process(es)",
            flush=True)
    result = _run(config, workdir, mesh, graphdef, state, rng, batches, ckpt,
                  writer, start, is_main=is_main, progress=progress,
                  log_batches=log_batches, signal_at_step=signal_at_step,
                  write_samples=write_samples)
    result.resumed_from = resumed
    return result
  finally:
    ckpt.wait()        # an in-flight save (always of a good state) completes
    ckpt.close()
    batches.close()
    if writer is not None:
      writer.close()


def _run(config, workdir, mesh, graphdef, state, rng, batches, ckpt, writer,
         start, *, is_main, progress, log_batches, signal_at_step,
         write_samples):
  t = config.train
  step_fn = make_train_step(graphdef, config)
  metrics = _Metrics(config, is_main)
  bar = _progress(t.steps, start, progress and is_main)
  batch_log = (open(os.path.join(  # pylint: disable=consider-using-with
      workdir, f"batches-{jax.process_index()}.jsonl"), "a")
               if log_batches else None)
  B = t.batch_size
  window_start, window_steps = time.perf_counter(), 0
  done = last_saved = start
  with _PreemptionSignal() as preemption:
    try:
      for step in range(start, t.steps):
        try:
          local = next(batches)
        except StopIteration:
          logging.warning("data exhausted after step %d (data.num_epochs="
                          "%d)", step, config.data.num_epochs)
          break
        batch = data_sharding.to_global_arrays(local, mesh)
        with jax.set_mesh(mesh):
          state, m = step_fn(state, batch, jax.random.fold_in(rng, step))
        done = step + 1
        if batch_log is not None:
          batch_log.write(json.dumps({"step": step, "scenes": batches.last_info[
              "scene_id"]}) + "\n")
          batch_log.flush()
        metrics.add(step, m)
        metrics.drain(keep_last=1)
        window_steps += 1
        if step == start:       # leave compilation out of the throughput
          jax.block_until_ready(state.step)
          window_start, window_steps = time.perf_counter(), 0
        bar.update(1)
        if signal_at_step is not None and done == signal_at_step[0]:
          os.kill(os.getpid(), signal_at_step[1])
        preempted = preemption.received or ckpt.reached_preemption(done)
        if done % t.log_every == 0 or done == t.steps or preempted:
          metrics.drain()
          elapsed = time.perf_counter() - window_start
          scalars = metrics.summary()
          scalars.update(steps_per_s=window_steps / elapsed,
                         scenes_per_s=window_steps * B / elapsed,
                         bad_records=batches.bad_record_count(),
                         skipped_steps=int(jax.device_get(state.skipped)))
          if scalars["skipped_steps"] > t.max_skipped:
            raise NonFiniteLossError(
                f"{scalars['skipped_steps']} steps skipped as non-finite "
                f"(train.max_skipped={t.max_skipped}); stopping")
          window_start, window_steps = time.perf_counter(), 0
          if is_main:
            writer.scalars(done, scalars)
            writer.flush()
            bar.set_postfix(loss=f"{scalars['loss']:.4f}",
                            scenes_s=f"{scalars['scenes_per_s']:.1f}")
            bar.write(
                f"step {done:6d}  loss {scalars['loss']:.4f}  grad_norm "
                f"{scalars['grad_norm']:.3f}  lr {scalars['lr']:.2e}  "
                f"{scalars['steps_per_s']:.2f} steps/s  "
                f"{scalars['scenes_per_s']:.1f} scenes/s  bad_records "
                f"{scalars['bad_records']}  skipped {scalars['skipped_steps']}")
        if done % t.checkpoint_every == 0 or done == t.steps or preempted:
          metrics.drain()            # a NaN at this step raises before saving
          last_saved = ckpt.save(state, batches.get_state(), rng, config)
        if t.sample_every and (done % t.sample_every == 0
                               or done == t.steps):
          out = write_samples(config, graphdef, state, workdir, done, mesh)
          if is_main:
            bar.write(f"step {done:6d}  samples written to {out}")
        if preempted:
          ckpt.wait()
          if is_main:
            bar.write(f"preempted: checkpoint saved at step {done}; rerun the "
                      "same command to resume")
          return RunResult(done, metrics.last_loss, preempted=True,
                           skipped=int(jax.device_get(state.skipped)),
                           bad_records=batches.bad_record_count())
      metrics.drain()
      if done != last_saved:                             # the data ran out
        ckpt.save(state, batches.get_state(), rng, config)
      return RunResult(done, metrics.last_loss,
                       skipped=int(jax.device_get(state.skipped)),
                       bad_records=batches.bad_record_count())
    finally:
      bar.close()
      if batch_log is not None:
        batch_log.close()
