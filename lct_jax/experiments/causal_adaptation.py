r"""Experiment 4: causal adaptation is fast (paper: Fig. 9), measured exactly
on synthetic scenes.

  # the two fine-tunes, the same config and steps, one from the LCT weights
  python train.py --config configs/demo_long.py:causal \
      --workdir runs/demo_long_causal \
      --config.train.init_from=runs/demo_long                   # ~12 min
  python train.py --config configs/demo_long.py:causal \
      --workdir runs/demo_long_causal_scratch                   # ~12 min
  python -m lct_jax.experiments.causal_adaptation \
      --from-lct runs/demo_long_causal \
      --from-scratch runs/demo_long_causal_scratch --scenes 32 --seeds 2 \
      --png docs/causal_adaptation.png --json docs/causal_adaptation.json

At every checkpoint of both runs (and, for the run started from the LCT
weights, at step 0: those weights under the context-causal mask before any
update), the causal model generates held-out scenes shot after shot against
its KV cache. Reported against fine-tune steps: fidelity to history (per
scene factor, `lct_jax.data.fidelity`; the mean over factors is the
consistency the experiment tracks, the tint its headline) next to chance,
and recognised shots. For each run, the first step whose consistency
reaches 90% of that run's final value, and the first from which it stays
there (a start that is high, dips and recovers reaches it at step 0); and
the same for 90% of the LCT-started run's final value (a from-scratch run
can reach 90% of its own low final quickly).
Means and sample standard deviations over `--seeds` disjoint seed sets.

Inputs are checked before any sampling: both runs must be context-causal
fine-tunes of the same geometry and schedule, `--from-lct` started from a
bidirectional scene-stage run (train.init_from), `--from-scratch` from no
weights, `--scenes` at least 32, `--seeds` at least 2.
"""
from __future__ import annotations

import os

from lct_jax import evaluate
from lct_jax.data import consistency, fidelity
from lct_jax.experiments import common

ROWS = ("lct", "scratch")
ROW_LABELS = {"lct": "from the LCT weights", "scratch": "from scratch"}
FLAGS = {"lct": "--from-lct", "scratch": "--from-scratch"}
FRACTION = 0.9                      # "reaches 90% of the final consistency"
SHEETS = 2                          # contact sheets per run and end (--out)


def checkpoint_steps(workdir: str) -> list[int]:
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(s) for s in os.listdir(d) if s.isdigit()) if (
      os.path.isdir(d)) else []


def check_inputs(lct: str, lct_config, scratch: str, scratch_config) -> str:
  """-> the bidirectional run the LCT-started fine-tune began from."""
  for key, config in (("lct", lct_config), ("scratch", scratch_config)):
    common.check_causal(FLAGS[key], config)
  start = lct_config.train.init_from
  if not start:
    raise ValueError("--from-lct must be a causal fine-tune started from the "
                     "LCT weights (train.init_from is empty)")
  if scratch_config.train.init_from:
    raise ValueError(f"--from-scratch must start from no weights; it started "
                     f"from train.init_from={scratch_config.train.init_from!r}")
  start_config = common.run_config("--from-lct's train.init_from", start)
  common.check_bidirectional(f"--from-lct's train.init_from ({start})",
                             start_config)
  common.check_same_scenes(("--from-lct", "--from-scratch"), lct_config,
                           scratch_config)
  common.check_same_model(("--from-lct", "its train.init_from"), lct_config,
                          start_config)
  for key in ("steps", "batch_size"):
    a, b = lct_config.train[key], scratch_config.train[key]
    if a != b:
      raise ValueError(f"--from-lct and --from-scratch differ in train.{key}"
                       f" ({a} against {b}): not the same fine-tune")
  for key, wd in (("lct", lct), ("scratch", scratch)):
    if not checkpoint_steps(wd):
      raise ValueError(f"{FLAGS[key]} {wd!r} has no checkpoint; train first")
  return start


def steps_to_reach(steps: list[int], values: list[float], target: float):
  """The first step whose value is >= target (None if none is)."""
  for s, v in zip(steps, values):
    if v >= target:
      return s
  return None


def steps_to_stay(steps: list[int], values: list[float], target: float):
  """The first step from which every later value is >= target (None if
  the last is below): unlike `steps_to_reach`, not fooled by a start that
  is high, dips, and recovers."""
  first = None
  for s, v in zip(steps, values):
    if v < target:
      first = None
    elif first is None:
      first = s
  return first


def reach(curves: dict) -> dict:
  """Per row: its final consistency, and the steps at which it reaches and
  stays at FRACTION of its own final and of the LCT-started run's."""
  final_lct = list(curves["lct"].values())[-1]["fidelity_mean"][0]
  out = {}
  for r in ROWS:
    xs = [int(s) for s in curves[r]]
    ys = [c["fidelity_mean"][0] for c in curves[r].values()]
    own, lct = FRACTION * ys[-1], FRACTION * final_lct
    out[r] = dict(final=ys[-1], own=steps_to_reach(xs, ys, own),
                  own_stays=steps_to_stay(xs, ys, own),
                  lct_final=steps_to_reach(xs, ys, lct),
                  lct_final_stays=steps_to_stay(xs, ys, lct))
  return out


def summarise(per_seed: list[dict]) -> dict:
  return {"recognised": common.mean_std([p["table"]["recognised"]
                                         for p in per_seed]),
          **common.fidelity_summary([p["fidelity"] for p in per_seed])}


def run(from_lct: str, from_scratch: str, *,
        scenes: int = common.MIN_SCENES, seeds: int = 2, steps=None,
        out: str | None = None, log=print) -> dict:
  """-> {"curves": {row: {step: summary}}, "reach": {...}, ...}; with
  `out`, contact sheets of seed set 0's first scenes at each run's first
  and last point (out/{row}_step{step}_{i}.png)."""
  common.check_counts(scenes, seeds)
  configs = {"lct": common.run_config("--from-lct", from_lct),
             "scratch": common.run_config("--from-scratch", from_scratch)}
  start = check_inputs(from_lct, configs["lct"], from_scratch,
                       configs["scratch"])
  workdirs = {"lct": from_lct, "scratch": from_scratch}
  # Step 0 of the LCT-started run is the LCT weights (a checkpoint at step
  # 0 would hold the same).
  points = {"lct": [0] + [s for s in checkpoint_steps(from_lct) if s > 0],
            "scratch": checkpoint_steps(from_scratch)}
  curves = {r: {} for r in ROWS}
  per_seed = {r: {} for r in ROWS}
  sampler, sheets = None, {}
  for r in ROWS:
    for step in points[r]:
      if r == "lct" and step == 0:   # the LCT weights under the causal mask
        config, sampler, _ = evaluate.load_sampler(
            workdirs[r], steps=steps, weights_from=start)
      else:
        config, sampler, _ = evaluate.load_sampler(workdirs[r], steps=steps,
                                                   step=step)
      per_seed[r][step] = []
      sheet = None
      if out and step in (points[r][0], points[r][-1]):
        sheet = sheets[f"{r}_step{step}"] = []
      for seed_set in range(seeds):
        records, sequences, _ = common.generate(
            config, sampler, scenes, seed_set, mode="causal",
            sheets=sheet if seed_set == 0 else None, sheet_count=SHEETS)
        per_seed[r][step].append(dict(
            table=consistency.score_scenes(records),
            fidelity=fidelity.score_sequences(sequences)))
      curves[r][step] = summarise(per_seed[r][step])
      log(f"{ROW_LABELS[r]}, step {step}: consistency "
          f"{common.pm(curves[r][step]['fidelity_mean'])}, tint "
          f"{common.pm(curves[r][step]['fidelity/tint'])}, recognised "
          f"{common.pm(curves[r][step]['recognised'])}")
  result = dict(curves=curves, reach=reach(curves), per_seed=per_seed,
                from_lct=dict(workdir=from_lct, init_from=start),
                from_scratch=dict(workdir=from_scratch), scenes=scenes,
                seeds=seeds, fraction=FRACTION,
                sampler=dict(steps=sampler.ts.size - 1,
                             guidance=sampler.cfg_scale, eta=sampler.eta,
                             t_c=sampler.t_c))
  if out:
    common.write_sheets(out, sheets)
  log(format_table(result))
  return result


def format_table(result: dict) -> str:
  s = result["sampler"]
  lines = [f"causal adaptation: {result['scenes']} held-out scenes x "
           f"{result['seeds']} seed sets (mean +- std over sets), causal AR "
           f"with the KV cache; {s['steps']} Euler steps, guidance "
           f"{s['guidance']}, eta {s['eta']}, t_c {s['t_c']}; consistency = "
           "fidelity to history, mean of scene factors; chance in brackets",
           f"{'start':22s} {'step':>5s} {'consistency':>22s} "
           f"{'tint (no prompt)':>22s} {'recognised':>15s}"]
  for r in ROWS:
    for step, c in result["curves"][r].items():
      lines.append(
          f"{ROW_LABELS[r]:22s} {step:>5} "
          f"{common.pm(c['fidelity_mean'])} ({c['fidelity_mean_chance'][0]:.2f})"
          f" {common.pm(c['fidelity/tint'])} "
          f"({c['fidelity_chance/tint'][0]:.2f}) "
          f"{common.pm(c['recognised']):>15s}")
  pct = int(round(100 * result["fraction"]))
  for r in ROWS:
    x = result["reach"][r]
    lines.append(f"{ROW_LABELS[r]}: final consistency {x['final']:.3f}; "
                 f"{pct}% of its own final first at step {x['own']} and "
                 f"from step {x['own_stays']} on; {pct}% of the LCT-started "
                 f"final first at step {x['lct_final']} and from step "
                 f"{x['lct_final_stays']} on")
  return "\n".join(lines)


def plot(result: dict, path: str) -> None:
  plt = common.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  for i, r in enumerate(ROWS):
    curve = result["curves"][r]
    xs = [int(s) for s in curve]
    for ax, key, chance in ((axes[0], "fidelity_mean", "fidelity_mean_chance"),
                            (axes[1], "recognised", None)):
      ax.errorbar(xs, [c[key][0] for c in curve.values()],
                  yerr=[c[key][1] for c in curve.values()], marker="o",
                  capsize=2, color=f"C{i}", label=ROW_LABELS[r])
      if chance:
        ax.plot(xs, [c[chance][0] for c in curve.values()], "--",
                color=f"C{i}", linewidth=0.8, label=f"{ROW_LABELS[r]}: chance")
  final = result["reach"]["lct"]["final"]
  axes[0].axhline(result["fraction"] * final, color="grey", linewidth=0.8,
                  label=f"{int(100 * result['fraction'])}% of the LCT-started"
                        " final")
  axes[0].set_ylabel("consistency (fidelity to history)")
  axes[1].set_ylabel("recognised")
  for ax in axes:
    ax.set_xlabel("causal fine-tune steps")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
  fig.suptitle(f"Causal adaptation (Fig. 9): {result['scenes']} held-out "
               f"scenes x {result['seeds']} seed sets", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv=None):
  p = common.parser(__doc__, seeds=2, sheets=True)
  p.add_argument("--from-lct", required=True,
                 help="causal fine-tune started from the LCT weights")
  p.add_argument("--from-scratch", required=True,
                 help="the same fine-tune started from no weights")
  return common.main(p, argv, run, plot)


if __name__ == "__main__":
  main()
