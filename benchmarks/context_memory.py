"""Per-device memory of the compiled train step as the context axis grows.

  python benchmarks/context_memory.py

Config: configs/demo.py (4 shots x 256 video tokens + 80 text = 1104 tokens,
width 128, 4 dual blocks, remat none), batch 2, float32; mesh
(data 1, fsdp 1, context n, tensor 1) over n of 8 fake CPU devices.
Numbers are XLA's `memory_analysis()` of the compiled step: temp (scratch +
activations kept for the backward) per device; arguments (params, optimizer
state, batch) are replicated here, so they do not shrink.
"""
import os
import pathlib
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, Mesh  # noqa: E402

from lct_jax import batch as batch_lib  # noqa: E402
from lct_jax import configlib  # noqa: E402
from lct_jax.data.sharding import batch_sharding  # noqa: E402
from lct_jax.parallel import MESH_AXES  # noqa: E402
from lct_jax.model.sharding import state_shardings  # noqa: E402
from lct_jax.training import (create_train_state, init_model,  # noqa: E402
                              make_train_step)

DEMO = str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "demo.py")
BATCH = 2
RUNS = [("ring", 1), ("ring", 2), ("ring", 4), ("ring", 8),
        ("all_gather", 8), ("ulysses", 4)]


def temp_bytes(strategy: str, n: int) -> tuple[int, int]:
  c = configlib.load(DEMO)
  c.model.context_strategy = strategy
  c.train.batch_size = BATCH
  graphdef, params = init_model(c)
  state = create_train_state(c, params)
  batch = batch_lib.random_batch(c, 0, BATCH)
  mesh = Mesh(np.asarray(jax.devices()[:n]).reshape(1, 1, n, 1), MESH_AXES,
              axis_types=(AxisType.Auto,) * 4)
  abstract = lambda tree, sh: jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s),
      tree, sh)
  with jax.set_mesh(mesh):
    st = abstract(state, state_shardings(c, state, mesh))
    bt = abstract(batch, jax.tree.map(lambda _: batch_sharding(mesh), batch))
    step = make_train_step(graphdef, c, donate=False)
    mem = step.lower(st, bt, jax.random.key(0)).compile().memory_analysis()
  return mem.temp_size_in_bytes, mem.argument_size_in_bytes


def main():
  print(f"jax {jax.__version__}, {os.cpu_count()} CPUs", file=sys.stderr)
  print("| strategy | context n | temp MiB / device | x of n=1 | target "
        "1/n x 1.3 | args MiB |")
  print("|---|---|---|---|---|---|")
  base = None
  for strategy, n in RUNS:
    temp, args = temp_bytes(strategy, n)
    base = temp if base is None else base
    print(f"| {strategy} | {n} | {temp / 2**20:.1f} | {temp / base:.3f} | "
          f"{1.3 / n:.3f} | {args / 2**20:.1f} |", flush=True)


if __name__ == "__main__":
  main()
