"""train.py and the loop: exact resume after SIGKILL, SIGTERM preemption,
corrupt checkpoints, non-finite losses, stages, config errors, TensorBoard.

The subprocess runs use one CPU device (the runs under test are the real
command line); in-process checks use the session's 8 fake devices.
"""
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from lct_jax import configlib
from lct_jax.data import pipeline
from lct_jax.parallel import make_mesh
from lct_jax.sampling.load import load_config
from lct_jax.training import abstract_model, placement
from lct_jax.training import loop
from lct_jax.training.checkpoint import (Checkpointer, CheckpointError,
                                         load_params)

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "tests" / "configs" / "tiny_run.py")


CACHE = {}


def run_train(workdir, *extra, check=True):
  # One persistent compilation cache for all runs of this module: only the
  # first run compiles (the cached executable is the same program).
  if "dir" not in CACHE:
    import tempfile  # pylint: disable=g-import-not-at-top
    CACHE["dir"] = tempfile.mkdtemp(prefix="lct_jax_cache_")
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="",
             PYTHONPATH=str(ROOT), JAX_COMPILATION_CACHE_DIR=CACHE["dir"],
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  cmd = [sys.executable, str(ROOT / "train.py"), f"--config={CONFIG}",
         f"--workdir={workdir}", "--noprogress", "--log_batches", *extra]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)
  if check and proc.returncode != 0:
    raise AssertionError(f"{cmd} failed ({proc.returncode}):\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
  return proc


def config(stage="lct", **train):
  c = configlib.load(CONFIG + (f":{stage}" if stage != "lct" else ""))
  for k, v in train.items():
    c.train[k] = v
  return c


def restore(workdir, c=None, mesh=None, with_data=True):
  """The newest checkpoint of a workdir, on one device (numpy leaves)."""
  c = c or config()
  mesh = mesh or make_mesh(dict(data=1, fsdp=1, context=1, tensor=1),
                           jax.devices()[:1])
  abstract = placement.abstract_state(c)
  target = placement.with_shape_dtype_shardings(
      abstract, placement.state_shardings(c, mesh, abstract))
  ckpt = Checkpointer(str(workdir))
  try:
    return ckpt.restore_latest(target, c, with_data=with_data)
  finally:
    ckpt.close()


def batches_by_step(workdir):
  """step -> scene ids; a step run twice (resumed) must repeat itself."""
  out = {}
  with open(os.path.join(workdir, "batches-0.jsonl")) as f:
    for line in f:
      entry = json.loads(line)
      if entry["step"] in out:
        assert out[entry["step"]] == entry["scenes"], entry
      out[entry["step"]] = entry["scenes"]
  return out


def assert_same_state(a, b):
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0],
                          jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y),
                                  err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
  """8 steps without interruption: the reference."""
  workdir = tmp_path_factory.mktemp("straight")
  proc = run_train(workdir)
  assert "done: step 8" in proc.stdout
  return workdir


def test_sigkill_and_resume_is_bit_identical(straight_run, tmp_path):
  killed = run_train(tmp_path, "--testing_signal_at=5:KILL", check=False)
  assert killed.returncode == -signal.SIGKILL
  steps = Checkpointer(str(tmp_path)).steps()
  assert steps and max(steps) <= 4            # nothing after the kill
  resumed = run_train(tmp_path)
  assert "resumed from step" in resumed.stdout
  want, got = restore(straight_run), restore(tmp_path)
  assert got["step"] == want["step"] == 8
  assert_same_state(got["state"], want["state"])
  assert got["iterator_state"] == want["iterator_state"]
  assert batches_by_step(tmp_path) == batches_by_step(straight_run)


def test_sigterm_saves_the_current_step_and_resumes(straight_run, tmp_path):
  proc = run_train(tmp_path, "--testing_signal_at=3:TERM",
                   "--config.train.checkpoint_every=100")
  assert "preempted: checkpoint saved at step 3" in proc.stdout
  assert Checkpointer(str(tmp_path)).steps() == [3]
  run_train(tmp_path, "--config.train.checkpoint_every=100")
  assert_same_state(restore(tmp_path)["state"],
                    restore(straight_run)["state"])


# orbax's failed read leaves an asyncio callback on a closed loop: noise.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous(
    straight_run, tmp_path, capsys):
  workdir = tmp_path / "run"
  shutil.copytree(straight_run, workdir)
  assert Checkpointer(str(workdir)).steps() == [4, 6, 8]
  # Truncate the biggest file of step 8's state (array data).
  files = [p for p in (workdir / "checkpoints" / "8" / "state").rglob("*")
           if p.is_file()]
  victim = max(files, key=lambda p: p.stat().st_size)
  victim.write_bytes(victim.read_bytes()[:victim.stat().st_size // 2])
  got = restore(workdir)
  assert got["step"] == 6
  out = capsys.readouterr().out
  assert f"{workdir}/checkpoints/8 is corrupt" in out
  moved = list((workdir / "corrupt_checkpoints").iterdir())
  assert len(moved) == 1 and moved[0].name.startswith("8-")   # kept


def test_a_checkpoint_with_flipped_bits_is_caught_by_its_checksum(
    straight_run, tmp_path):
  """Corruption the storage layer does not notice: meta checksums do."""
  workdir = tmp_path / "run"
  shutil.copytree(straight_run, workdir)
  meta_path = workdir / "checkpoints" / "8" / "meta" / "metadata"
  meta = json.loads(meta_path.read_text())
  meta["checksums"][3] = (meta["checksums"][3] + 1) % 2**32
  meta_path.write_text(json.dumps(meta))
  assert restore(workdir)["step"] == 6


def test_a_checkpoint_of_another_model_is_an_error_not_corruption(
    straight_run):
  other = config()
  other.model.width, other.model.num_heads = 64, 4
  with pytest.raises(CheckpointError, match="different model.*model.width"):
    restore(straight_run, other)
  assert not (straight_run / "corrupt_checkpoints").exists()


@pytest.mark.parametrize("value, loads", [(False, True), (True, False)])
def test_a_removed_field_loads_only_at_its_no_op_value(straight_run,
                                                       tmp_path, value, loads):
  """A run saved while `model.pooled_text_with_global` existed (since
  removed): at False it changed nothing, so the checkpoint and config.json
  load as before; at True the model would silently differ, so both refuse
  it by name."""
  workdir = tmp_path / "run"
  shutil.copytree(straight_run, workdir)
  for path in [workdir / "config.json",
               *workdir.glob("checkpoints/*/meta/metadata")]:
    saved = json.loads(path.read_text())
    (saved["config"] if "config" in saved else saved)["model"][
        "pooled_text_with_global"] = value
    path.write_text(json.dumps(saved))
  if loads:
    assert restore(workdir)["step"] == 8
    assert "pooled_text_with_global" not in load_config(str(workdir)).model
  else:
    with pytest.raises(CheckpointError,
                       match="different model.*pooled_text_with_global"):
      restore(workdir)
    with pytest.raises(CheckpointError, match="pooled_text_with_global=True"):
      load_config(str(workdir))
  assert not (workdir / "corrupt_checkpoints").exists()


def test_a_removed_training_only_field_is_ignored(straight_run, tmp_path):
  """`flow.t_uniform` (tried once, then removed) never shaped the model: a
  run that set it still loads for sampling."""
  workdir = tmp_path / "run"
  shutil.copytree(straight_run, workdir)
  path = workdir / "config.json"
  saved = json.loads(path.read_text())
  saved["flow"]["t_uniform"] = 0.2
  path.write_text(json.dumps(saved))
  assert "t_uniform" not in load_config(str(workdir)).flow


def test_tensorboard_scalars(straight_run):
  ea_mod = pytest.importorskip(
      "tensorboard.backend.event_processing.event_accumulator")
  ea = ea_mod.EventAccumulator(str(straight_run / "tb"))
  ea.Reload()
  tags = ea.Tags()["scalars"]
  for tag in ("loss", "grad_norm", "lr", "steps_per_s", "scenes_per_s",
              "bad_records", "skipped_steps", "loss_t0"):
    assert tag in tags
  assert [e.step for e in ea.Scalars("loss")] == [2, 4, 6, 8]
  assert all(np.isfinite(e.value) for e in ea.Scalars("loss"))


def test_causal_stage_starts_from_the_bidirectional_checkpoint(straight_run,
                                                                tmp_path):
  c = config("causal", init_from=str(straight_run))
  assert c.model.attention_mask == "context_causal"
  mesh = make_mesh(c.mesh)                    # 8 fake devices
  abstract = placement.abstract_state(c)
  shardings = placement.state_shardings(c, mesh, abstract)
  state, it_state, _, resumed = loop._initial_state(   # pylint: disable=protected-access
      c, mesh, Checkpointer(str(tmp_path)), abstract, shardings)
  assert it_state is None and resumed is None
  want = restore(straight_run)["state"]
  assert_same_state(state.params, want.params)
  assert_same_state(state.ema_params, want.params)
  assert int(state.step) == 0                 # a new optimizer state
  for m in jax.tree.leaves(state.opt_state):
    if m.ndim:
      assert not np.asarray(m).any()
  with pytest.raises(CheckpointError, match="does not exist"):
    load_params(str(tmp_path / "nope"), abstract.params)


def test_init_from_takes_a_converted_params_checkpoint(tmp_path):
  """`python -m lct_jax.convert import` writes <dir>/params + config.json."""
  from lct_jax.convert.checkpoint import save_params  # pylint: disable=g-import-not-at-top
  from lct_jax.training import init_model  # pylint: disable=g-import-not-at-top
  c = config("text_rope")
  _, params = init_model(c, seed=7)
  save_params(str(tmp_path / "converted"), params, c)
  c.train.init_from = str(tmp_path / "converted")
  mesh = make_mesh(c.mesh)
  abstract = placement.abstract_state(c)
  state, _, _, _ = loop._initial_state(   # pylint: disable=protected-access
      c, mesh, Checkpointer(str(tmp_path / "run")), abstract,
      placement.state_shardings(c, mesh, abstract))
  assert_same_state(state.params, params)


class NaNAt:
  """Wraps make_pipeline: the batch of step `k` gets a NaN latent."""

  def __init__(self, k):
    self.k, self.make = k, pipeline.make_pipeline

  def __call__(self, *args, **kwargs):
    it, k = self.make(*args, **kwargs), self.k

    class It:
      n = 0

      def __next__(self):
        batch = next(it)
        if It.n == k:
          batch["latents"][0, 0, 0, 0, 0, 0] = np.nan
        It.n += 1
        return batch

      def __getattr__(self, name):
        return getattr(it, name)
    return It()


def in_process_config(**train):
  c = config(**train)
  c.train.batch_size = 8                      # one scene per fake device
  return c


@pytest.mark.parametrize("mode", ["stop", "skip"])
def test_a_nan_loss_never_reaches_a_checkpoint(mode, tmp_path, monkeypatch):
  monkeypatch.setattr(pipeline, "make_pipeline", NaNAt(2))
  c = in_process_config(on_nonfinite=mode, steps=4, checkpoint_every=2)
  if mode == "stop":
    with pytest.raises(loop.NonFiniteLossError, match="step 2"):
      loop.train(c, str(tmp_path), progress=False)
    assert Checkpointer(str(tmp_path)).steps() == [2]
  else:
    result = loop.train(c, str(tmp_path), progress=False)
    assert result.step == 4 and result.skipped == 1
  mesh = make_mesh(c.mesh)
  got = restore(tmp_path, c, mesh)
  assert int(got["state"].skipped) == (mode == "skip")
  for x in jax.tree.leaves(got["state"]):
    assert np.all(np.isfinite(np.asarray(x, np.float64)))


def test_config_errors_come_before_compiling(tmp_path):
  c = in_process_config()
  c.mesh.data = 3                             # 8 devices
  with pytest.raises(ValueError, match="has 3 devices but 8 are available"):
    loop.train(c, str(tmp_path), progress=False)
  c = in_process_config()
  c.train.batch_size = 4                      # 8 batch shards
  with pytest.raises(ValueError, match="batch_size=4 is not divisible by "
                     "the 8 batch shards"):
    loop.train(c, str(tmp_path), progress=False)
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with pytest.raises(PermissionError, match="not a writable directory"):
    loop.train(in_process_config(), str(blocker / "run"), progress=False)
  proc = run_train(tmp_path / "r", "--config.train.stpes=3", check=False)
  assert proc.returncode != 0
  assert "unknown config field 'train.stpes'" in proc.stderr


def test_two_processes_train_like_one(straight_run, tmp_path):
  """train.py as 2 jax.distributed processes of 1 CPU device each: each
  reads its half of every global batch, both write their iterator state,
  and the parameters follow the 1-process run (float tolerance: the
  gradient is summed over 2 devices in another order). The final sample
  videos are made by both processes on the 2-process mesh and written by
  process 0, and equal sampling the final weights on one device."""
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="",
             PYTHONPATH=str(ROOT))
  procs = [subprocess.Popen(
      [sys.executable, str(ROOT / "train.py"), f"--config={CONFIG}",
       f"--workdir={tmp_path}", "--noprogress", "--log_batches",
       "--config.train.distributed=True", f"--coordinator_address=localhost:"
       f"{port}", "--num_processes=2", f"--process_id={i}",
       "--config.train.sample_every=8", "--config.sample.steps=1"],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, out[-2000:] + err[-3000:]
  assert "done: step 8" in outs[0][0]
  assert "new run" not in outs[1][0]            # process 0 alone reports
  data = tmp_path / "checkpoints" / "8" / "data"
  assert sorted(f for f in os.listdir(data) if f.startswith("process")) == [
      "process_0-of-2.json", "process_1-of-2.json"]
  want = batches_by_step(straight_run)
  for step, scenes in want.items():
    halves = []
    for i in range(2):
      with open(tmp_path / f"batches-{i}.jsonl") as f:
        halves += [json.loads(l)["scenes"] for l in f
                   if json.loads(l)["step"] == step]
    assert sorted(halves[0] + halves[1]) == sorted(scenes)
  # This test process is one process: the 2-process iterator states are an
  # error to resume from (not corruption: nothing is moved) ...
  with pytest.raises(CheckpointError, match="another process layout"):
    restore(tmp_path)
  assert not (tmp_path / "corrupt_checkpoints").exists()
  # ... but the model state restores anywhere.
  got, ref = restore(tmp_path, with_data=False), restore(straight_run)
  for a, b in zip(jax.tree.leaves(got["state"].params),
                  jax.tree.leaves(ref["state"].params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5,
                               rtol=1e-4)
  from lct_jax.sampling import Sampler, periodic  # pylint: disable=g-import-not-at-top
  c = config()
  c.sample.steps = 1
  scene = periodic.validation_scene(c)[0]
  graphdef, _ = abstract_model(c)
  s = c.sample
  want = Sampler(c, graphdef, got["state"].ema_params, steps=1,
                 shift=s.shift, cfg_scale=s.cfg_scale, t_c=s.t_c).joint(scene)
  for i, w in enumerate(want):
    shot = np.load(tmp_path / "samples" / "8" / f"shot_{i:02d}.npy")
    np.testing.assert_allclose(shot, w[:len(shot)], atol=1e-5)
