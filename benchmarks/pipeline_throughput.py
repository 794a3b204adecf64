"""Input-pipeline throughput (scenes/s) against the demo train step's need.

  python benchmarks/pipeline_throughput.py

Config: configs/demo.py (synthetic 32x32 RGB scenes drawn on the fly, up to
6 shots of up to 6 frames cut to 4 x 4 slots, batch 4). The pipeline is
timed over BATCHES batches after a warm-up batch (worker start-up
excluded), with 0 and 2 worker processes. The step's need is the demo
batch over one measured step (compile excluded); the issue's target is a
pipeline at least 5x faster than that.
"""
import pathlib
import time

import jax

from lct_jax import configlib
from lct_jax.data import pipeline
from lct_jax.training import create_train_state, init_model, make_train_step

BATCHES = 200
STEPS = 3
DEMO = str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "demo.py")


def pipeline_scenes_per_s(workers: int) -> float:
  c = configlib.load(DEMO)
  c.data.workers = workers
  it = pipeline.make_pipeline(c)
  try:
    next(it)                                  # start-up and warm-up
    t0 = time.perf_counter()
    for _ in range(BATCHES):
      next(it)
    return BATCHES * c.train.batch_size / (time.perf_counter() - t0)
  finally:
    it.close()


def step_scenes_per_s() -> float:
  c = configlib.load(DEMO)
  graphdef, params = init_model(c)
  state = create_train_state(c, params)
  step = make_train_step(graphdef, c)
  it = pipeline.make_pipeline(c)
  state, m = step(state, next(it), jax.random.key(0))   # compile
  jax.block_until_ready(m)
  t0 = time.perf_counter()
  for i in range(STEPS):
    state, m = step(state, next(it), jax.random.key(i + 1))
    jax.block_until_ready(m)
  return STEPS * c.train.batch_size / (time.perf_counter() - t0)


def main():
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}; demo config, "
        f"batch {configlib.load(DEMO).train.batch_size}")
  need = step_scenes_per_s()
  print(f"train step consumes {need:8.1f} scenes/s")
  for workers in (0, 2):
    got = pipeline_scenes_per_s(workers)
    print(f"pipeline, {workers} workers: {got:8.1f} scenes/s "
          f"({got / need:6.1f}x the step's need)")


if __name__ == "__main__":
  main()
