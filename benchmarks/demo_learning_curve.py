r"""How generation quality grows with training time: every checkpoint of a
synthetic-scene run (or of a recipe's stages, in training order),
evaluated on the same held-out scenes.

  python train.py --config configs/demo.py --workdir runs/demo \
      --config.train.keep_checkpoints=0
  python benchmarks/demo_learning_curve.py --workdir runs/demo --scenes 32 \
      --png docs/demo_learning_curve.png
  # a recipe's stages on one time axis (each started from the one before)
  python benchmarks/demo_learning_curve.py --workdir runs/demo_long_base \
      --workdir runs/demo_long --scenes 32 --png docs/demo_learning_curve.png

Per checkpoint: training wall minutes (the checkpoint's write time less the
run's start, `config.json`; compilation and saves included, so resume a run
and the clock restarts; a run started with `train.init_from` from another
run's workdir, as the demo's LCT stage is from its single-shot stage, adds
that run's minutes to its last checkpoint), the fraction of generated shots recognised, global
prompt adherence for the background and sprite colours, and the mean
cross-shot consistency of the scene factors; each figure beside its chance
level (`lct_jax.evaluate`). A single-shot stage is scored on one-shot
held-out scenes (the run's own shot limit), so it has no consistency.
Prints a table, writes a PNG (needs matplotlib:
`pip install -e ".[bench]"`) and, with --json, the rows (a rerun extends them).
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from lct_jax import evaluate
from lct_jax.data import consistency
from lct_jax.data import synthetic as syn


def checkpoint_minutes(workdir: str) -> dict[int, float]:
  """step -> wall minutes from the run's start to the checkpoint's write,
  plus the minutes of the run it started from (`train.init_from`)."""
  start = os.path.getmtime(os.path.join(workdir, "config.json"))
  ckpt_dir = os.path.join(workdir, "checkpoints")
  steps = sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
  if not steps:
    raise SystemExit(f"error: no checkpoints under {ckpt_dir}")
  before = base_minutes(workdir)
  return {s: before + (os.path.getmtime(os.path.join(ckpt_dir, str(s)))
                       - start) / 60 for s in steps}


def base_minutes(workdir: str) -> float:
  """Training minutes of the run `workdir` was initialised from (0 if none,
  or if init_from is not a run's workdir)."""
  with open(os.path.join(workdir, "config.json")) as f:
    base = json.load(f)["train"].get("init_from") or ""
  if not os.path.isdir(os.path.join(base, "checkpoints")):
    return 0.0
  return max(checkpoint_minutes(base).values())


def row(table: dict, minutes: float, workdir: str) -> dict:
  mean = lambda d: consistency.nanmean([d[f] for f in syn.SCENE_FACTORS])
  ga, gc = table["global_adherence"], table["global_adherence_chance"]
  return dict(
      workdir=workdir, step=table["step"], minutes=minutes,
      recognised=table["recognised"],
      bg=ga["background_color"], bg_chance=gc["background_color"],
      sprite=ga["sprite_color"], sprite_chance=gc["sprite_color"],
      consistency=mean(table["consistency"]),
      consistency_chance=mean(table["consistency_chance"]),
      tint=table["consistency"]["tint"],
      tint_chance=table["consistency_chance"]["tint"])


def plot(rows: list[dict], path: str, title: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  x = [r["minutes"] for r in rows]
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
  for key, label, colour in (("recognised", "recognised", "k"),
                             ("bg", "background colour adherence", "C0"),
                             ("sprite", "sprite colour adherence", "C1")):
    axes[0].plot(x, [r[key] for r in rows], "o-", color=colour, label=label)
  for key, colour in (("bg", "C0"), ("sprite", "C1")):
    axes[0].plot(x, [r[key + "_chance"] for r in rows], ":", color=colour)
  axes[0].axhline(0.8, color="grey", lw=0.8, ls="--")
  axes[0].set(xlabel="training minutes (2 CPU cores)", ylim=(0, 1.02),
              title="generation (dotted: chance, dashed: target)")
  axes[0].legend(fontsize=8)
  for key, label, colour in (("consistency", "mean scene factors", "C2"),
                             ("tint", "lighting tint (in no prompt)", "C3")):
    axes[1].plot(x, [r[key] for r in rows], "o-", color=colour, label=label)
    # chance only where there is a measurement (not for one-shot scenes)
    axes[1].plot(x, [r[key + "_chance"] if not np.isnan(r[key]) else np.nan
                     for r in rows], ":", color=colour)
  axes[1].set(xlabel="training minutes (2 CPU cores)", ylim=(0, 1.02),
              title="cross-shot consistency (dotted: chance)")
  axes[1].legend(fontsize=8)
  starts = [i for i, r in enumerate(rows)
            if not i or r["workdir"] != rows[i - 1]["workdir"]]
  for i in starts if len(starts) > 1 else []:   # name each stage, and
    if i:                                       # mark where it takes over
      for ax in axes:
        ax.axvline(rows[i - 1]["minutes"], color="grey", lw=0.6)
    axes[0].annotate(os.path.basename(rows[i]["workdir"]),
                     (rows[i]["minutes"], 0.02), fontsize=7, color="grey")
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", required=True, action="append",
                 help="a run; repeat for a recipe's stages, in order")
  p.add_argument("--scenes", type=int, default=32)
  p.add_argument("--steps", type=int, default=None, help="Euler steps")
  p.add_argument("--guidance", type=float, default=None)
  p.add_argument("--every", type=int, default=1,
                 help="evaluate every n-th checkpoint (and the last)")
  p.add_argument("--at", default="",
                 help="comma-separated checkpoint steps (instead of --every;"
                      " one workdir only)")
  p.add_argument("--png", default=None)
  p.add_argument("--json", default=None)
  a = p.parse_args(argv)
  workdirs = [os.path.normpath(w) for w in a.workdir]
  if a.at and len(workdirs) > 1:
    raise SystemExit("error: --at picks one run's steps; give one --workdir"
                     " or use --every")
  wanted = []                       # (workdir, step, minutes)
  for wd in workdirs:
    minutes = checkpoint_minutes(wd)
    steps = sorted(minutes)
    if a.at:
      at = {int(x) for x in a.at.split(",")}
      missing = at - set(steps)
      if missing:
        raise SystemExit(f"error: --at {sorted(missing)}: no such "
                         f"checkpoints (there are {steps})")
      steps = sorted(at)
    else:
      steps = sorted(set(steps[a.every - 1::a.every]) | {steps[-1]})
    wanted += [(wd, s, minutes[s]) for s in steps]
  # Rows already in --json are kept and not re-evaluated: rerun the same
  # command while a run trains (or after more checkpoints) to extend it.
  done = {}
  if a.json and os.path.exists(a.json):
    with open(a.json) as f:
      saved = json.load(f)
    if saved.get("workdirs") != workdirs:
      raise SystemExit(f"error: --json {a.json} holds rows of "
                       f"{saved.get('workdirs', saved.get('workdir'))!r}, "
                       f"not of --workdir {workdirs}; give another --json "
                       "or delete it")
    done = {(r["workdir"], r["step"]): r for r in saved["rows"]}
  print(f"runs {', '.join(workdirs)}: {a.scenes} held-out scenes, joint "
        f"generation, {a.steps or 'config'} Euler steps, guidance "
        f"{a.guidance if a.guidance is not None else 'config'}")
  order = lambda k: (workdirs.index(k[0]), k[1])
  for wd, s, minutes in wanted:
    if (wd, s) in done:
      continue
    table = evaluate.evaluate(wd, scenes=a.scenes, steps=a.steps,
                              guidance=a.guidance, step=s,
                              log=lambda *_: None)
    done[(wd, s)] = dict(row(table, minutes, wd), euler_steps=table["steps"],
                         guidance=table["guidance"], scenes=table["scenes"],
                         shots=table["shots"])
    if a.json:
      with open(a.json, "w") as f:
        json.dump(dict(workdirs=workdirs,
                       rows=[done[k] for k in sorted(done, key=order)]),
                  f, indent=1)
  rows = [done[k] for k in sorted(done, key=order)]
  f3 = lambda x: "  n/a" if np.isnan(x) else f"{x:5.3f}"
  print(f"{'run':24s} {'step':>6s} {'min':>5s} {'shots':>5s} {'recog':>6s} "
        f"{'bg':>11s} {'sprite':>11s} {'consist':>11s} {'tint':>11s}")
  for r in rows:
    pair = lambda k: f"{f3(r[k])}/{f3(r[k + '_chance'])}"
    print(f"{os.path.basename(r['workdir']):24s} {r['step']:6d} "
          f"{r['minutes']:5.1f} {r['shots']:5d} {r['recognised']:6.3f} "
          f"{pair('bg')} {pair('sprite')} {pair('consistency')} "
          f"{pair('tint')}")
  print("(x/y: measured/chance; chance = the same statistic across "
        "different scenes; bg/sprite: global-prompt adherence; single-shot "
        "runs are scored on one-shot scenes: no consistency)")
  if a.png:
    plot(rows, a.png, f"{' -> '.join(workdirs)}, {a.scenes} held-out scenes"
         f", {rows[-1]['euler_steps']} Euler steps, guidance "
         f"{rows[-1]['guidance']}")


if __name__ == "__main__":
  main()
