r"""Experiment 3: the conditioning / history timestep trade-off (paper: Figs.
7-8), measured exactly on synthetic scenes.

  python -m lct_jax.experiments.history_timestep \
      --causal runs/demo_long_causal --shots 8 \
      --t-c 0 100 300 500 700 900 --scenes 32 --seeds 2 \
      --png docs/history_timestep.png --json docs/history_timestep.json

The context-causal model generates held-out scenes of `--shots` shots (at
least 8, more than its window of scene.max_shots) shot after shot against
its KV cache. Each shot is conditioned on the `--window` shots before it
(default scene.max_shots - 1, the most the model was trained to hold), and
once generated it is noised to the history timestep t_c (0-1000, the
paper's scale) and cached. For each t_c:
  fidelity   agreement of each new shot with its history shots per scene
             factor (`lct_jax.data.fidelity`), next to its chance level
             (the same pairs with the history from other scenes): the
             paper's Fig. 7, large t_c sacrifices fidelity;
  drift      agreement of shot k with shot 1, against k: shot 1 leaves the
             window after `window` shots, so from then on only the chain
             of generated shots carries the scene;
  quality    recognised shots against k: the paper's Fig. 8, low t_c
             accumulates errors shot after shot.
Means and sample standard deviations over `--seeds` disjoint seed sets.

Inputs are checked before any sampling: `--causal` must be a context-causal
run, `--shots` at least 8, every t_c in [0, 1000], `--window` within the
model's window, `--scenes` at least 32, `--seeds` at least 2.
"""
from __future__ import annotations

import numpy as np

from lct_jax import evaluate
from lct_jax.data import consistency, fidelity
from lct_jax.data import synthetic as syn
from lct_jax.experiments import common

MIN_SHOTS = 8                      # the minimum rollout
T_CS = (0, 100, 300, 500, 700, 900)
SHEETS = 2                         # contact sheets per t_c (--out)
FACTORS = ("tint",) + tuple(f for f in syn.SCENE_FACTORS if f != "tint")


def check_inputs(config, *, shots: int, t_cs, window: int | None) -> int:
  """-> the history window; errors name the flag."""
  common.check_causal("--causal", config)
  if shots < MIN_SHOTS:
    raise ValueError(f"--shots must be >= {MIN_SHOTS}, got {shots}")
  bad = [t for t in t_cs if not 0 <= t <= 1000]
  if bad or not t_cs:
    raise ValueError(f"--t-c values must be in [0, 1000] (the paper's "
                     f"scale), got {list(t_cs)}")
  most = config.scene.max_shots - 1
  window = most if window is None else window
  if not 1 <= window <= most:
    raise ValueError(f"--window must be in [1, {most}] (scene.max_shots - 1:"
                     f" the history the model was trained to hold), got "
                     f"{window}")
  return window


def summarise(per_seed: list[dict], shots: int) -> dict:
  """Per-seed results of one t_c -> {figure: (mean, std over seed sets)};
  per-index figures as lists over k = 0..shots-1 (drift: k >= 1)."""
  stat = common.mean_std
  fids = [p["fidelity"] for p in per_seed]
  out = {"recognised": stat([p["table"]["recognised"] for p in per_seed]),
         **common.fidelity_summary(fids)}
  for f in ("background_color", "sprite_color"):
    out[f"adherence/{f}"] = stat([p["table"]["global_adherence"][f]
                                  for p in per_seed])
  out["recognised_by_shot"] = [stat([d["recognised"][k] for d in fids])
                               for k in range(shots)]
  out["drift_mean"] = [stat([d["drift_mean"][k] for d in fids])
                       for k in range(1, shots)]
  out["drift_mean_chance"] = [stat([d["drift_mean_chance"][k] for d in fids])
                              for k in range(1, shots)]
  out["drift_tint"] = [stat([d["drift"][k]["tint"] for d in fids])
                       for k in range(1, shots)]
  out["drift_tint_chance"] = [stat([d["drift_chance"][k]["tint"]
                                    for d in fids]) for k in range(1, shots)]
  return out


def run(causal: str, *, shots: int = MIN_SHOTS, t_cs=T_CS,
        window: int | None = None, scenes: int = common.MIN_SCENES,
        seeds: int = 2, steps=None, out: str | None = None,
        log=print) -> dict:
  """-> {"t_c": {t_c: summary}, "per_seed": {t_c: [...]}, ...}; t_c on
  the paper's 0-1000 scale. With `out`, contact sheets of seed set 0's
  first scenes at each t_c (out/t_c{t_c}_scene_{i}.png: the rollout's
  shots above the held-out truth)."""
  t_cs = [int(t) if float(t).is_integer() else float(t) for t in t_cs]
  common.check_counts(scenes, seeds)
  config = common.run_config("--causal", causal)
  window = check_inputs(config, shots=shots, t_cs=t_cs, window=window)
  per_seed, rows, step, sheets = {}, {}, None, {}
  for t_c in t_cs:
    config, sampler, step = evaluate.load_sampler(
        causal, steps=steps, t_c=t_c / 1000, capacity=shots - 1)
    kwargs = dict(mode="causal", max_shots=shots, min_shots=shots,
                  window=window)
    common.warm_up(config, sampler, **kwargs)
    per_seed[t_c], sheets[f"t_c{t_c}_scene"] = [], []
    for seed_set in range(seeds):
      records, sequences, seconds = common.generate(
          config, sampler, scenes, seed_set, **kwargs,
          sheets=sheets[f"t_c{t_c}_scene"] if out and seed_set == 0
          else None, sheet_count=SHEETS)
      per_seed[t_c].append(dict(
          table=consistency.score_scenes(records),
          fidelity=fidelity.score_sequences(sequences),
          seconds_per_shot=seconds / (scenes * shots)))
    rows[t_c] = summarise(per_seed[t_c], shots)
    log(f"t_c {t_c}: fidelity (mean of factors) "
        f"{common.pm(rows[t_c]['fidelity_mean'])}, recognised "
        f"{common.pm(rows[t_c]['recognised'])}")
  result = dict(t_c=rows, per_seed=per_seed,
                causal=dict(workdir=causal, step=step), shots=shots,
                window=window, scenes=scenes, seeds=seeds,
                sampler=dict(steps=sampler.ts.size - 1,
                             guidance=sampler.cfg_scale, eta=sampler.eta))
  if out:
    common.write_sheets(out, sheets)
  log(format_table(result))
  return result


def format_table(result: dict) -> str:
  n, last = result["shots"], result["shots"] - 2    # drift lists start at k=1
  s = result["sampler"]
  lines = [f"history timestep: {result['scenes']} held-out {n}-shot scenes x "
           f"{result['seeds']} seed sets (mean +- std over sets), causal AR "
           f"with a window of {result['window']} shots; {s['steps']} Euler "
           f"steps, guidance {s['guidance']}, eta {s['eta']}; chance in "
           "brackets",
           f"{'t_c':>4s} {'recognised':>15s} {'shot 1':>7s} {f'shot {n}':>7s}"
           f" {'fidelity: tint':>22s} {'mean of factors':>22s}"
           f" {f'shot {n} ~ shot 1: tint':>24s} {'mean':>22s}"]
  for t_c, r in result["t_c"].items():
    cell = lambda ms, ch: f"{common.pm(ms)} ({ch[0]:.2f})"
    lines.append(
        f"{t_c:>4} {common.pm(r['recognised']):>15s} "
        f"{r['recognised_by_shot'][0][0]:7.3f} "
        f"{r['recognised_by_shot'][-1][0]:7.3f} "
        f"{cell(r['fidelity/tint'], r['fidelity_chance/tint']):>22s} "
        f"{cell(r['fidelity_mean'], r['fidelity_mean_chance']):>22s} "
        f"{cell(r['drift_tint'][last], r['drift_tint_chance'][last]):>24s} "
        f"{cell(r['drift_mean'][last], r['drift_mean_chance'][last]):>22s}")
  return "\n".join(lines)


def plot(result: dict, path: str) -> None:
  plt = common.pyplot()
  rows, n = result["t_c"], result["shots"]
  t_cs = list(rows)
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
  ax = axes[0]
  for key, label in (("fidelity/tint", "tint (no prompt)"),
                     ("fidelity_mean", "mean of scene factors")):
    chance_key = key.replace("fidelity", "fidelity_chance", 1) if "/" in key \
        else "fidelity_mean_chance"
    line = ax.errorbar(t_cs, [rows[t][key][0] for t in t_cs],
                       yerr=[rows[t][key][1] for t in t_cs], marker="o",
                       capsize=2, label=label)
    ax.plot(t_cs, [rows[t][chance_key][0] for t in t_cs], "--",
            color=line[0].get_color(), label=f"{label}: chance")
  ax.set_xlabel("history timestep t_c (0-1000)")
  ax.set_ylabel("fidelity to history")
  ax.set_ylim(0, 1.05)
  ax.set_title("Fidelity against t_c (Fig. 7)")
  ax.legend(fontsize=7)
  ks = np.arange(2, n + 1)
  for i, t in enumerate(t_cs):
    axes[1].plot(ks, [m for m, _ in rows[t]["drift_tint"]], marker=".",
                 color=f"C{i}", label=f"t_c {t}")
    axes[2].plot(np.arange(1, n + 1),
                 [m for m, _ in rows[t]["recognised_by_shot"]], marker=".",
                 color=f"C{i}", label=f"t_c {t}")
  chance = np.mean([[m for m, _ in rows[t]["drift_tint_chance"]]
                    for t in t_cs], axis=0)
  axes[1].plot(ks, chance, "k--", label="chance")
  axes[1].axvline(result["window"] + 1.5, color="grey", linewidth=0.8)
  axes[1].set_xlabel("shot k")
  axes[1].set_ylabel("tint agreement with shot 1")
  axes[1].set_ylim(0, 1.05)
  axes[1].set_title("Drift from shot 1 (grey: shot 1 leaves the window)")
  axes[1].legend(fontsize=7, loc="lower left", ncol=2)
  axes[2].set_xlabel("shot k")
  axes[2].set_ylabel("recognised")
  axes[2].set_ylim(0, 1.05)
  axes[2].set_title("Quality against k (Fig. 8)")
  axes[2].legend(fontsize=7)
  fig.suptitle(f"{result['scenes']} held-out {n}-shot scenes x "
               f"{result['seeds']} seed sets, causal AR, window "
               f"{result['window']}", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv=None):
  p = common.parser(__doc__, seeds=2, sheets=True)
  p.add_argument("--causal", required=True,
                 help="context-causal (causal stage) workdir")
  p.add_argument("--shots", type=int, default=MIN_SHOTS)
  p.add_argument("--t-c", dest="t_cs", type=float, nargs="+",
                 default=list(T_CS),
                 help="history timesteps on the paper's 0-1000 scale")
  p.add_argument("--window", type=int, default=None,
                 help="history shots per new shot (default scene.max_shots"
                      " - 1)")
  return common.main(p, argv, run, plot)


if __name__ == "__main__":
  main()
