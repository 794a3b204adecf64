"""Train-step throughput and MFU of the 3B config on GPU(s): 1-shot, multi-shot.

  python benchmarks/gpu_step.py                      # 1 and 3 shots, 25 frames
  python benchmarks/gpu_step.py --shots 1,9 --frames 13 --steps 10
  python benchmarks/gpu_step.py --config configs/demo.py --smoke   # CPU check

Config: configs/lct_3b.py (width 2048, 20 dual blocks, 16 heads of 128,
bf16 compute, full remat, cuDNN attention via `attention_impl='auto'`),
one scene per data-parallel replica. The mesh is the config's, fitted to
the devices present: context = min(config, devices), fsdp = the rest.
MFU = model FLOPs / step time / peak, model FLOPs = 6 x matmul params x
tokens + 12 x depth x width x allowed attention pairs (forward 1x, backward
2x; remat recomputation not counted, the usual convention). Peak bf16 dense
per device from the table below (device_kind); pass --peak_tflops otherwise.
Not run on this project's CPU machines: there is no GPU there.
"""
import argparse
import statistics
import time

import jax
import numpy as np

from lct_jax import batch as batch_lib
from lct_jax import configlib
from lct_jax.attention import context
from lct_jax.data.sharding import batch_sharding
from lct_jax.layout import SceneGeometry
from lct_jax.parallel import make_mesh
from lct_jax.model.sharding import state_shardings
from lct_jax.training import (count_params, create_train_state, init_model,
                              make_train_step)

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "A100": 312.0,
               "B200": 2250.0}


def model_flops(c, params, batch_size: int) -> float:
  geom = SceneGeometry.from_config(c)
  tokens = geom.seq_len * batch_size
  matmul = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)
               if x.ndim >= 2)
  ids = geom.token_groups()
  pairs = context.device_work(ids, ids, 1,
                              c.model.attention_mask == "context_causal")[0]
  return (6 * matmul * tokens +
          12 * c.model.depth * c.model.width * float(pairs) * batch_size)


def run(c, steps: int, peak: float | None) -> dict:
  n = jax.device_count()
  me = c.mesh
  me.data, me.tensor = 1, 1
  me.context = max(1, min(me.context, n))
  while n % me.context:
    me.context //= 2
  me.fsdp = -1
  mesh = make_mesh(me)
  c.train.batch_size = mesh.shape["data"] * mesh.shape["fsdp"]
  graphdef, params = init_model(c)
  state = create_train_state(c, params)
  batch = batch_lib.random_batch(c, 0, c.train.batch_size)
  with jax.set_mesh(mesh):
    state = jax.device_put(state, state_shardings(c, state, mesh))
    batch = jax.device_put(batch, batch_sharding(mesh))
    step = make_train_step(graphdef, c)
    t0 = time.perf_counter()
    state, m = step(state, batch, jax.random.key(0))
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    times = []
    for i in range(steps):
      t0 = time.perf_counter()
      state, m = step(state, batch, jax.random.key(i + 1))
      jax.block_until_ready(m)
      times.append(time.perf_counter() - t0)
  sec = statistics.median(times)
  geom = SceneGeometry.from_config(c)
  flops = model_flops(c, params, c.train.batch_size)
  kind = jax.devices()[0].device_kind
  peak = peak or next((v for k, v in PEAK_TFLOPS.items() if k in kind), None)
  return dict(device=kind, devices=n, mesh=dict(mesh.shape),
              params=count_params(params), seq_len=geom.seq_len,
              batch=c.train.batch_size, first_step_s=compile_s, step_s=sec,
              tokens_per_s=geom.seq_len * c.train.batch_size / sec,
              mfu=(flops / sec / (peak * 1e12 * n)) if peak else None,
              loss=float(m["loss"]))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--config", default="configs/lct_3b.py")
  ap.add_argument("--shots", default="1,3")
  ap.add_argument("--frames", type=int, default=25)
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--peak_tflops", type=float, default=None)
  ap.add_argument("--smoke", action="store_true",
                  help="tiny shapes, 1 step: checks the script runs")
  args = ap.parse_args()
  for shots in (int(s) for s in args.shots.split(",")):
    c = configlib.load(args.config)
    c.scene.max_shots = shots
    if not args.smoke:
      c.scene.frames = args.frames
    print(f"shots={shots}:", run(c, 1 if args.smoke else args.steps,
                                args.peak_tflops), flush=True)


if __name__ == "__main__":
  main()
