"""Compile time of the jitted train step at 2 and 16 dual blocks.

The blocks are stacked and run by one lax.scan, so compile time should not
grow with depth (target: 16-layer / 2-layer <= 1.5).

  python benchmarks/compile_time.py

Config: configs/demo.py (width 128, 4 heads of 32, 4 shots, 1104 tokens,
batch 2, blockwise attention, float32) with model.depth overridden; time is
trace + lower + XLA compile of the whole step (forward, backward, AdamW,
EMA), median of 3 fresh compilations per depth.
"""
import pathlib
import statistics
import time

import jax

from lct_jax import batch as batch_lib
from lct_jax import configlib
from lct_jax.training import create_train_state, init_model, make_train_step

DEMO = str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "demo.py")


def compile_seconds(depth: int, remat: str) -> float:
  c = configlib.load(DEMO)
  c.model.depth, c.model.remat_policy, c.train.batch_size = depth, remat, 2
  graphdef, params = init_model(c)
  state = create_train_state(c, params)
  batch = batch_lib.random_batch(c, 0, 2)
  step = make_train_step(graphdef, c)
  t0 = time.perf_counter()
  step.lower(state, batch, jax.random.key(0)).compile()
  return time.perf_counter() - t0


def main():
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, "
        f"{len(jax.devices())} device(s)")
  print(f"{'remat':>6} {'depth':>6} {'compile s (median of 3)':>24}")
  for remat in ("none", "full"):
    times = {}
    for depth in (2, 16):
      times[depth] = statistics.median(compile_seconds(depth, remat)
                                       for _ in range(3))
      print(f"{remat:>6} {depth:>6} {times[depth]:>24.2f}")
    print(f"{remat:>6} {'ratio':>6} {times[16] / times[2]:>24.2f}   "
          "(16 / 2; target <= 1.5)")


if __name__ == "__main__":
  main()
