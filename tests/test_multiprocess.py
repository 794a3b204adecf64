"""Two local processes (4 CPU devices each, `jax.distributed`) train like one.

The worker (`_multiprocess_worker.py`) runs `run_steps` on a mesh spanning
both processes; this test runs the same steps on one device and compares.
"""
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np

from _util import tiny_config
from lct_jax import batch as batch_lib
from lct_jax.model.sharding import state_shardings
from lct_jax.training import create_train_state, init_model, make_train_step

HERE = pathlib.Path(__file__).resolve().parent
BATCH, STEPS = 4, 3


def _config():
  c = tiny_config()
  c.model.attention_mask = "context_causal"
  c.model.context_strategy = "ring"
  c.optim.lr, c.optim.eps = 1e-3, 1e-3     # see test_sharded_train._config
  c.train.batch_size = BATCH
  return c


def _global(x, sharding):
  """A global array from a value every process holds in full."""
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda i: x[i])


def run_steps(mesh=None):
  """STEPS train steps -> (losses, params); on `mesh` if given."""
  c = _config()
  graphdef, params = init_model(c)
  state = create_train_state(c, params)
  step = make_train_step(graphdef, c, donate=False)
  batches = [batch_lib.random_batch(c, s, BATCH) for s in range(STEPS)]
  losses = []
  ctx = jax.set_mesh(mesh) if mesh is not None else None
  if ctx is not None:
    ctx.__enter__()
    from lct_jax.data.sharding import batch_sharding  # pylint: disable=g-import-not-at-top
    state = jax.tree.map(_global, state, state_shardings(c, state, mesh))
    batches = [jax.tree.map(lambda x: _global(x, batch_sharding(mesh)), b)
               for b in batches]
  try:
    for s, batch in enumerate(batches):
      state, metrics = step(state, batch, jax.random.key(s))
      losses.append(float(metrics["loss"]))
  finally:
    if ctx is not None:
      ctx.__exit__(None, None, None)
  return losses, state.params


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
  out = tmp_path / "result.npz"
  port = _free_port()
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
      [str(HERE.parent), str(HERE), env.get("PYTHONPATH", "")])
  env.pop("XLA_FLAGS", None)
  procs = [subprocess.Popen(
      [sys.executable, str(HERE / "_multiprocess_worker.py"), str(port),
       str(pid), str(out)], env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for pid in range(2)]
  logs = []
  try:
    for p in procs:
      logs.append(p.communicate(timeout=600)[0])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert all(p.returncode == 0 for p in procs), "\n".join(
      log[-3000:] for log in logs)

  losses_ref, params_ref = run_steps()
  got = np.load(out)
  np.testing.assert_allclose(got["losses"], losses_ref, rtol=1e-5)
  for i, r in enumerate(jax.tree.leaves(params_ref)):
    r = np.asarray(r)
    # Parameters after 3 Adam steps of lr 1e-3: compare to 1e-3 of a step.
    assert np.max(np.abs(got[str(i)] - r)) <= 1e-6, i
