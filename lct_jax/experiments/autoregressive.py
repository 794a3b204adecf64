r"""Experiment 2: context-causal against bidirectional auto-regression (paper:
Table 2 lower part, Fig. 6), measured exactly on synthetic scenes.

  python -m lct_jax.experiments.autoregressive --causal runs/demo_long_causal \
      --bidirectional runs/demo_long --scenes 32 --seeds 3 \
      --png docs/autoregressive.png --json docs/autoregressive.json \
      --out out/autoregressive              # + contact sheets

Three rows, on the same held-out scenes, prompts and noise seeds, as the
paper's table:
  joint             the bidirectional model generates all shots together;
  bidirectional AR  the bidirectional model generates shot after shot, its
                    history (every earlier shot) re-run as t_c conditions
                    at every Euler step (`Sampler.bidirectional_ar`);
  causal AR         the context-causal fine-tune generates shot after shot
                    against its KV cache: each finished shot is noised to
                    t_c and run once (`Sampler.causal`).
Per row: fidelity to history (per scene factor, the fraction of (shot,
earlier shot) pairs that agree; `lct_jax.data.fidelity`) next to its chance
level (the same pairs with the history from other scenes), the lighting
tint first since no prompt names it; prompt adherence (global: background
and sprite colour; shot: framing and action) next to chance; recognised
shots; and the wall time per generated shot, with the compile done before
timing. Means and sample standard deviations over `--seeds` disjoint seed
sets.

Inputs are checked before any sampling: `--causal` must be a context-causal
run, `--bidirectional` a bidirectional scene-stage run of the same scene
geometry, `--scenes` at least 32, `--seeds` at least 2.
"""
from __future__ import annotations

import numpy as np

from lct_jax import evaluate
from lct_jax.data import consistency, fidelity
from lct_jax.data import synthetic as syn
from lct_jax.experiments import common

ROWS = ("joint", "bidirectional_ar", "causal")
ROW_LABELS = {"joint": "bidirectional, joint",
              "bidirectional_ar": "bidirectional, AR",
              "causal": "causal, AR (KV cache)"}
GLOBAL_ADHERENCE = ("background_color", "sprite_color")
SHOT_ADHERENCE = syn.SHOT_FACTORS
FACTORS = ("tint",) + tuple(f for f in syn.SCENE_FACTORS if f != "tint")
SHEETS = 3


def check_inputs(causal_config, bidirectional_config) -> None:
  common.check_causal("--causal", causal_config)
  common.check_bidirectional("--bidirectional", bidirectional_config)
  common.check_same_scenes(("--causal", "--bidirectional"), causal_config,
                           bidirectional_config)


def summarise(tables: list[dict], fidelities: list[dict],
              seconds_per_shot: list[float]) -> dict:
  """Per-seed tables of one row -> {figure: (mean, std over seed sets)}."""
  stat = common.mean_std
  out = {"recognised": stat([t["recognised"] for t in tables]),
         "seconds_per_shot": stat(seconds_per_shot),
         **common.fidelity_summary(fidelities)}
  for f in GLOBAL_ADHERENCE:
    out[f"adherence/{f}"] = stat([t["global_adherence"][f] for t in tables])
    out[f"adherence_chance/{f}"] = stat(
        [t["global_adherence_chance"][f] for t in tables])
  for f in SHOT_ADHERENCE:
    out[f"adherence/{f}"] = stat([t["adherence"][f] for t in tables])
    out[f"adherence_chance/{f}"] = stat([t["adherence_chance"][f]
                                         for t in tables])
  return out


def run(causal: str, bidirectional: str, *, scenes: int = common.MIN_SCENES,
        seeds: int = 3, steps=None, out: str | None = None,
        log=print) -> dict:
  """-> {"rows": {row: summary}, "per_seed": {row: [...]}, ...}; with
  `out`, contact sheets of seed set 0's first scenes per row."""
  common.check_counts(scenes, seeds)
  causal_config = common.run_config("--causal", causal)
  bi_config = common.run_config("--bidirectional", bidirectional)
  check_inputs(causal_config, bi_config)
  bi_config, bi_sampler, bi_step = evaluate.load_sampler(bidirectional,
                                                         steps=steps)
  causal_config, causal_sampler, causal_step = evaluate.load_sampler(
      causal, steps=steps)
  models = {"joint": (bi_config, bi_sampler),
            "bidirectional_ar": (bi_config, bi_sampler),
            "causal": (causal_config, causal_sampler)}
  for r in ROWS:
    config, sampler = models[r]
    common.warm_up(config, sampler, mode=r)
  per_seed = {r: [] for r in ROWS}
  sheets = {r: [] for r in ROWS}
  for seed_set in range(seeds):
    for r in ROWS:
      config, sampler = models[r]
      records, sequences, seconds = common.generate(
          config, sampler, scenes, seed_set, mode=r,
          sheets=sheets[r] if out and seed_set == 0 else None,
          sheet_count=SHEETS)
      shots = sum(len(s["estimates"]) for s in sequences)
      per_seed[r].append(dict(table=consistency.score_scenes(records),
                              fidelity=fidelity.score_sequences(sequences),
                              seconds_per_shot=seconds / shots))
    log(f"seed set {seed_set}: tint fidelity " + ", ".join(
        f"{r} {per_seed[r][-1]['fidelity']['fidelity']['tint']:.3f}"
        for r in ROWS))
  result = dict(
      rows={r: summarise([p["table"] for p in per_seed[r]],
                         [p["fidelity"] for p in per_seed[r]],
                         [p["seconds_per_shot"] for p in per_seed[r]])
            for r in ROWS},
      per_seed=per_seed,
      causal=dict(workdir=causal, step=causal_step),
      bidirectional=dict(workdir=bidirectional, step=bi_step),
      scenes=scenes, seeds=seeds,
      sampler=dict(steps=bi_sampler.ts.size - 1, guidance=bi_sampler.cfg_scale,
                   eta=bi_sampler.eta, t_c=bi_sampler.t_c))
  if out:
    common.write_sheets(out, {f"{r}_scene": sheets[r] for r in ROWS})
  log(format_table(result))
  return result


def format_table(result: dict) -> str:
  rows, width = result["rows"], 24
  s = result["sampler"]
  lines = [f"auto-regression: {result['scenes']} held-out scenes x "
           f"{result['seeds']} seed sets (mean +- std over sets); "
           f"{s['steps']} Euler steps, guidance {s['guidance']}, eta "
           f"{s['eta']}, history t_c {s['t_c']}; chance in brackets",
           f"{'':26s}" + "".join(f"{ROW_LABELS[r]:>{width}s}" for r in ROWS)]

  def line(label, key, chance_key=None):
    cells = []
    for r in ROWS:
      cell = common.pm(rows[r][key])
      if chance_key:
        cell += f" ({rows[r][chance_key][0]:.2f})"
      cells.append(f"{cell:>{width}s}")
    return f"{label:26s}" + "".join(cells)

  lines.append(line("recognised", "recognised"))
  lines.append("fidelity to history")
  for f in FACTORS:
    lines.append(line(f"  {f}" + (" (no prompt)" if f == "tint" else ""),
                      f"fidelity/{f}", f"fidelity_chance/{f}"))
  lines.append(line("  mean of factors", "fidelity_mean",
                    "fidelity_mean_chance"))
  lines.append("prompt adherence")
  for f in GLOBAL_ADHERENCE + SHOT_ADHERENCE:
    lines.append(line(f"  {f}", f"adherence/{f}", f"adherence_chance/{f}"))
  lines.append(line("seconds per shot", "seconds_per_shot"))
  ratio = (rows["bidirectional_ar"]["seconds_per_shot"][0]
           / rows["causal"]["seconds_per_shot"][0])
  lines.append(f"bidirectional AR takes {ratio:.2f}x the causal model's time "
               "per shot (the same run, the same machine)")
  return "\n".join(lines)


def plot(result: dict, path: str) -> None:
  plt = common.pyplot()
  rows = result["rows"]
  fig, (ax, ax_t) = plt.subplots(1, 2, figsize=(10, 3.6),
                                 gridspec_kw={"width_ratios": [4, 1]})
  x = np.arange(len(FACTORS))
  bar = 0.27
  for i, r in enumerate(ROWS):
    s = rows[r]
    xs = x + (i - 1) * bar
    ax.bar(xs, [s[f"fidelity/{f}"][0] for f in FACTORS], bar,
           yerr=[s[f"fidelity/{f}"][1] for f in FACTORS], capsize=2,
           label=ROW_LABELS[r])
    ax.hlines([s[f"fidelity_chance/{f}"][0] for f in FACTORS], xs - bar / 2,
              xs + bar / 2, colors="black", linewidth=1.5,
              label="chance" if i == 0 else None)
  ax.set_xticks(x, [f + "\n(no prompt)" if f == "tint" else f
                    for f in FACTORS])
  ax.set_ylim(0, 1.3)
  ax.set_ylabel("fidelity to history")
  ax.set_title(f"{result['scenes']} held-out scenes x {result['seeds']} seed "
               "sets (mean, std over sets)")
  ax.legend(fontsize=8, loc="upper center", ncol=4)
  ax_t.bar(np.arange(len(ROWS)), [rows[r]["seconds_per_shot"][0] for r in ROWS],
           yerr=[rows[r]["seconds_per_shot"][1] for r in ROWS], capsize=2,
           color=[f"C{i}" for i in range(len(ROWS))])
  ax_t.set_xticks(np.arange(len(ROWS)), ["joint", "bi. AR", "causal"])
  ax_t.set_ylabel("seconds per shot")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv=None):
  p = common.parser(__doc__, seeds=3, sheets=True)
  p.add_argument("--causal", required=True,
                 help="context-causal (causal stage) workdir")
  p.add_argument("--bidirectional", required=True,
                 help="bidirectional scene-stage (lct) workdir")
  return common.main(p, argv, run, plot)


if __name__ == "__main__":
  main()
