"""Per-device memory of the 3B train step on TPU slices, by the TPU compiler.

Each row compiles the real step of configs/lct_3b.py (`train.py
--compile_for`, `lct_jax.aot`) for a slice on this machine (libtpu, no TPU)
and reads the compiler's memory per device. Rows vary the slice, shots per
scene, the fsdp x context split, the context strategy, the remat policy and
grad_accum; the global batch is the config's 128 scenes.

  python benchmarks/tpu_memory.py                      # every row
  python benchmarks/tpu_memory.py --only shots         # one group
  python benchmarks/tpu_memory.py --json rows.json     # resumable: rows
                                                       # already there skip

Config: lct_3b (width 2048, 16 heads of 128, 20 dual blocks, 3.05B params,
bf16 compute, float32 params / AdamW / EMA), 22,500 video tokens per shot
+ 256 text tokens per group; blockwise tiles 512. Each compile takes 1-5
minutes on 2 cores.
"""
import argparse
import json
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from lct_jax import aot, configlib  # pylint: disable=wrong-import-position

CONFIG = str(pathlib.Path(__file__).resolve().parents[1] / "configs" /
             "lct_3b.py")

# (group, slice, shots, fsdp, context, strategy, remat, grad_accum)
ROWS = [
    # Linear in shots at a fixed mesh and plan (one scene per context group
    # per microbatch).
    ("shots", "v5p-128", 1, 8, 8, "ring", "full", 16),
    ("shots", "v5p-128", 3, 8, 8, "ring", "full", 16),
    ("shots", "v5p-128", 9, 8, 8, "ring", "full", 16),
    # The shipped plan without microbatches: 16 scenes per context group.
    ("shots", "v5p-128", 9, 8, 8, "ring", "full", 1),
    ("strategy", "v5p-128", 9, 8, 8, "ulysses", "full", 16),
    ("strategy", "v5p-128", 9, 8, 8, "all_gather", "full", 16),
    ("remat", "v5p-128", 9, 8, 8, "ring", "dots_no_batch", 16),
    ("remat", "v5p-128", 9, 8, 8, "ulysses", "dots_no_batch", 16),
    ("split", "v5p-128", 9, 4, 16, "ring", "full", 32),
    ("slice", "v5p-64", 9, 4, 8, "ring", "full", 32),
    ("slice", "v5p-256", 9, 16, 8, "ring", "full", 8),
    ("slice", "v6e-256", 9, 32, 8, "ring", "full", 4),
    # Smallest slices (the train state alone is 48.8 GB over fsdp).
    ("minimum", "v5p-8", 1, 4, 1, "ring", "full", 32),
    ("minimum", "v5p-8", 3, 1, 4, "ring", "full", 128),
    ("minimum", "v5p-8", 9, 1, 4, "ring", "full", 128),
    ("minimum", "v5p-16", 9, 1, 8, "ring", "full", 128),
    ("minimum", "v5p-8", 3, 4, 1, "ring", "full", 32),
    ("minimum", "v5p-16", 9, 2, 4, "ring", "full", 64),
    ("minimum", "v6e-8", 1, 8, 1, "ring", "full", 16),
    ("minimum", "v6e-16", 3, 4, 4, "ring", "full", 32),
    ("minimum", "v6e-32", 3, 8, 4, "ring", "full", 16),
    ("minimum", "v6e-32", 9, 4, 8, "ulysses", "full", 32),
    ("minimum", "v6e-64", 9, 4, 16, "ring", "full", 32),
    ("minimum", "v6e-64", 9, 8, 8, "ulysses", "full", 16),
]


def config_for(shots, fsdp, context, strategy, remat, accum):
  c = configlib.load(CONFIG)
  c.scene.max_shots = shots
  c.mesh.data, c.mesh.fsdp, c.mesh.context, c.mesh.tensor = 1, fsdp, context, 1
  c.model.context_strategy = strategy
  c.model.remat_policy = remat
  c.train.grad_accum = accum
  return c


def key(row) -> str:
  return "/".join(map(str, row[1:]))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--only", default="", help="a row group")
  parser.add_argument("--json", default="", help="rows file (resumable)")
  args = parser.parse_args()
  done = {}
  if args.json and os.path.exists(args.json):
    done = {r["key"]: r for r in json.load(open(args.json))}
  print(f"{'slice':>8} {'shots':>5} {'fsdp':>4} {'ctx':>4} {'strategy':>10} "
        f"{'remat':>13} {'accum':>5} {'temp GiB':>9} {'total GiB':>9} "
        f"{'HBM':>6} {'fits':>9} {'compile s':>9}", flush=True)
  for row in ROWS:
    if args.only and row[0] != args.only:
      continue
    group, name, shots, fsdp, context, strategy, remat, accum = row
    if key(row) not in done:
      t0 = time.perf_counter()
      try:
        r = aot.compile_train_step(
            config_for(shots, fsdp, context, strategy, remat, accum), name)
        rec = dict(temp=r.temp, total=r.total, hbm=r.tpu_slice.hbm_bytes,
                   fits=r.fits, headroom=r.headroom if r.fits else None,
                   compile_s=r.compile_s, tokens=r.tokens_per_scene,
                   note=r.note)
      except Exception as e:  # pylint: disable=broad-except
        rec = dict(error=str(e).splitlines()[0][:300],
                   compile_s=time.perf_counter() - t0)
      rec.update(key=key(row), group=group)
      done[key(row)] = rec
      if args.json:
        json.dump(list(done.values()), open(args.json, "w"), indent=1)
    rec = done[key(row)]
    gib = lambda b: "-" if b is None else f"{b / aot.GIB:.2f}"
    if "error" in rec:
      verdict = "error: " + rec["error"][:60]
    elif rec["fits"]:
      verdict = f"yes {rec['headroom']:.0%}"
    else:
      verdict = "no"
    print(f"{name:>8} {shots:>5} {fsdp:>4} {context:>4} {strategy:>10} "
          f"{remat:>13} {accum:>5} {gib(rec.get('temp')):>9} "
          f"{gib(rec.get('total')):>9} {gib(rec.get('hbm')):>6} "
          f"{verdict:>9} {rec['compile_s']:>9.0f}", flush=True)


if __name__ == "__main__":
  main()
