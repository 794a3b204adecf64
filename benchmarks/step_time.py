"""Train-step time of the demo config: attention kernels and tile sizes.

  python benchmarks/step_time.py

Config: configs/demo.py (width 128, 4 dual blocks, 4 heads of 32, 4 shots,
1104 tokens per scene), float32, batch 8 (set BATCH below), one device.
Time: median of 5 steps after a warm-up step (compile excluded).
"""
import pathlib
import statistics
import time

import jax

from lct_jax import batch as batch_lib
from lct_jax import configlib
from lct_jax.training import create_train_state, init_model, make_train_step

BATCH = 8
VARIANTS = [("dense", 2048), ("blockwise", 256), ("blockwise", 512),
            ("blockwise", 2048)]

DEMO = str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "demo.py")


def step_seconds(impl: str, block: int) -> float:
  c = configlib.load(DEMO)
  c.model.attention_impl = impl
  c.model.block_q = c.model.block_kv = block
  c.train.batch_size = BATCH
  graphdef, params = init_model(c)
  state = create_train_state(c, params)
  batch = batch_lib.random_batch(c, 0, BATCH)
  step = make_train_step(graphdef, c)
  state, m = step(state, batch, jax.random.key(0))
  jax.block_until_ready(m)
  times = []
  for i in range(5):
    t0 = time.perf_counter()
    state, m = step(state, batch, jax.random.key(i))
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def main():
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}; demo config, "
        f"batch {BATCH}, 1104 tokens/scene, float32")
  print(f"{'attention':>10} {'block':>6} {'s/step':>8} {'vs dense':>9}")
  base = None
  for impl, block in VARIANTS:
    s = step_seconds(impl, block)
    base = base or s
    shown = "whole" if block >= 1104 else str(block)
    print(f"{impl:>10} {shown:>6} {s:>8.2f} {s / base:>9.2f}")


if __name__ == "__main__":
  main()
