"""Train-step time of the demo model by size and attention kernel, per stage.

  python benchmarks/step_time.py            # about 5 minutes on 2 cores
  python benchmarks/step_time.py --variants demo,muon   # a subset

Config: configs/demo.py at its single-shot stage (`text_rope`: one shot and
its global prompt, 96 tokens per example) and its scene stage (`lct`: 4
shots, 336 tokens), float32, batch 8, one device; each row changes what
its name says (heads stay 32 wide). Time: median of 15 steps after a
warm-up step (compilation excluded), on one fixed batch, so the input
pipeline is not in it. FLOPs: model FLOPs of the step
(`lct_jax/model/flops.py`). The examples-per-second column is what a run
of the same minutes sees, the ratio column is against the demo's own
model (or the first row asked for) in the same run.
"""
import argparse
import pathlib
import statistics
import time

import jax

from lct_jax import batch as batch_lib
from lct_jax import configlib
from lct_jax.model import flops
from lct_jax.training import create_train_state, init_model, make_train_step

BATCH = 8
STEPS = 15
DEMO = str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "demo.py")
# name -> config overrides (the demo: width 128, 4 heads of 32, depth 4,
# blockwise attention in one tile).
VARIANTS = {
    "demo": {},
    "dense attention": {"model.attention_impl": "dense"},
    "width 64": {"model.width": 64, "model.num_heads": 2},
    "width 96": {"model.width": 96, "model.num_heads": 3},
    "width 192": {"model.width": 192, "model.num_heads": 6},
    "depth 2": {"model.depth": 2},
    "muon": {"optim.name": "muon"},   # the update rule, not the model
}


def step_seconds(stage: str, overrides: dict) -> tuple[float, float]:
  """-> (median seconds per step, model FLOPs per step)."""
  c = configlib.load(f"{DEMO}:{stage}")
  for key, value in overrides.items():
    section, field = key.split(".")
    c[section][field] = value
  c.train.batch_size = BATCH
  graphdef, params = init_model(c)
  state = create_train_state(c, params)
  batch = batch_lib.random_batch(c, 0, BATCH)
  step = make_train_step(graphdef, c)
  state, m = step(state, batch, jax.random.key(0))
  jax.block_until_ready(m)
  times = []
  for i in range(STEPS):
    t0 = time.perf_counter()
    state, m = step(state, batch, jax.random.key(i + 1))
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  return statistics.median(times), flops.step_flops(c, params).train_step


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--variants", default=",".join(VARIANTS),
                 help="comma-separated rows to time; the first is the "
                      "ratio's base (default: all, from 'demo')")
  names = p.parse_args().variants.split(",")
  unknown = [n for n in names if n not in VARIANTS]
  if unknown:
    p.error(f"--variants: unknown {unknown}; known: {list(VARIANTS)}")
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}; "
        f"configs/demo.py, batch {BATCH}, float32, median of {STEPS} steps")
  print(f"{'stage':>9} {'variant':>16} {'ms/step':>8} {'examples/s':>10} "
        f"{'GFLOP/step':>10} {'x demo time':>11}")
  for stage in ("text_rope", "lct"):
    base = None
    for name in names:
      seconds, step_flops = step_seconds(stage, VARIANTS[name])
      base = base or seconds
      print(f"{stage:>9} {name:>16} {seconds * 1e3:>8.1f} "
            f"{BATCH / seconds:>10.1f} {step_flops / 1e9:>10.2f} "
            f"{seconds / base:>11.2f}", flush=True)


if __name__ == "__main__":
  main()
