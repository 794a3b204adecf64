r"""Experiment 1: scene consistency comes from scene context (paper: Table 1,
Fig. 5), measured exactly on synthetic scenes.

  python -m lct_jax.experiments.scene_context --lct runs/demo_long \
      --single runs/demo_long_single --scenes 32 --seeds 3 \
      --png docs/scene_context.png --json docs/scene_context.json \
      --out out/scene_context               # + contact sheets

Three rows, on the same held-out scenes of the LCT run's shot count, from
the same prompts and noise seeds:
  joint   the LCT (scene-stage) model generates each scene's shots jointly;
  alone   the same model generates each shot as a one-shot scene of its own
          (the same global and shot prompt): no shot sees another;
  single  a single-shot model (`scene.max_shots = 1`) trained with the same
          compute as the scene stage (`configs/demo_long.py:single_control`)
          generates each shot alone.
Per scene factor: cross-shot consistency (the fraction of a scene's shot
pairs that agree) next to its chance level (the same statistic over shots
of different scenes), each the mean over `--seeds` disjoint sets of held-out
scenes and noise, with the standard deviation over the sets. The headline
is the lighting tint: no prompt names it, so only scene context can keep
it. Prompted factors can agree through the prompt alone, so the controls
may beat chance on them. Also per row: recognised shots and the global
prompt's background and sprite colour adherence.

Inputs are checked before any sampling: `--lct` must be a scene-stage run,
`--single` a single-shot run of the same geometry, `--scenes` at least
32, `--seeds` at least 2 (`common`). The PNG needs matplotlib
(`pip install -e ".[bench]"`).
"""
from __future__ import annotations

import time

import numpy as np

from lct_jax import evaluate
from lct_jax.data import consistency
from lct_jax.data import synthetic as syn
from lct_jax.experiments import common

ROWS = ("joint", "alone", "single")
ROW_LABELS = {"joint": "LCT, joint", "alone": "LCT, each shot alone",
              "single": "single-shot model (same compute)"}
ADHERENCE = ("background_color", "sprite_color")
SHEETS = 3                         # contact sheets per row (--out)
# The tint first: the headline, since no prompt names it.
FACTORS = ("tint",) + tuple(f for f in syn.SCENE_FACTORS if f != "tint")


def check_runs(lct_config, single_config) -> None:
  """Names the flag whose run is of the wrong kind."""
  common.check_bidirectional("--lct", lct_config)
  if single_config.scene.max_shots != 1:
    raise ValueError(
        f"--single must be a single-shot run (scene.max_shots = 1); this one "
        f"has scene.max_shots = {single_config.scene.max_shots}")
  common.check_same_scenes(("--lct", "--single"), lct_config, single_config,
                           keys=("frames", "height", "width", "max_text_len"))


def score_row(config, sampler, scenes: int, seed_set: int, *, alone: bool,
              max_shots: int, sheets: list | None = None) -> dict:
  """`score_scenes` of one row on one seed set; appends the first
  SHEETS scenes' contact sheets to `sheets` when given."""
  records, _, _ = common.generate(
      config, sampler, scenes, seed_set, mode="alone" if alone else "joint",
      max_shots=max_shots, sheets=sheets, sheet_count=SHEETS)
  return consistency.score_scenes(records)


def summarise(tables: list[dict]) -> dict:
  """Per-seed `score_scenes` tables of one row -> {figure: (mean, std)},
  the sample standard deviation over seed sets (ddof 1)."""
  stat = common.mean_std
  out = {"recognised": stat([t["recognised"] for t in tables])}
  for f in syn.SCENE_FACTORS:
    out[f"consistency/{f}"] = stat([t["consistency"][f] for t in tables])
    out[f"chance/{f}"] = stat([t["consistency_chance"][f] for t in tables])
  for f in ADHERENCE:
    out[f"adherence/{f}"] = stat([t["global_adherence"][f] for t in tables])
    out[f"adherence_chance/{f}"] = stat(
        [t["global_adherence_chance"][f] for t in tables])
  return out


def run(lct: str, single: str, *, scenes: int = common.MIN_SCENES,
        seeds: int = 3, steps=None, out: str | None = None, log=print) -> dict:
  """-> {"rows": {row: summary}, "per_seed": {row: [tables]}, ...}; with
  `out`, the first scenes of seed set 0 as contact sheets
  (out/{row}_scene_{i}.png: generated rows above the held-out truth)."""
  common.check_counts(scenes, seeds)
  lct_config = common.run_config("--lct", lct)
  single_config = common.run_config("--single", single)
  check_runs(lct_config, single_config)
  t0 = time.perf_counter()
  lct_config, lct_sampler, lct_step = evaluate.load_sampler(lct, steps=steps)
  single_config, single_sampler, single_step = evaluate.load_sampler(
      single, steps=steps)
  shots = lct_config.scene.max_shots
  models = {"joint": (lct_config, lct_sampler, False),
            "alone": (lct_config, lct_sampler, True),
            "single": (single_config, single_sampler, True)}
  per_seed = {r: [] for r in ROWS}
  sheets = {r: [] for r in ROWS}
  for seed_set in range(seeds):
    for r in ROWS:
      config, sampler, alone = models[r]
      per_seed[r].append(score_row(
          config, sampler, scenes, seed_set, alone=alone, max_shots=shots,
          sheets=sheets[r] if out and seed_set == 0 else None))
    log(f"seed set {seed_set}: tint consistency " + ", ".join(
        f"{r} {per_seed[r][-1]['consistency']['tint']:.3f}" for r in ROWS))
  result = dict(
      rows={r: summarise(per_seed[r]) for r in ROWS}, per_seed=per_seed,
      lct=dict(workdir=lct, step=lct_step), single=dict(workdir=single,
                                                       step=single_step),
      scenes=scenes, seeds=seeds, shots_per_scene=shots,
      sampler=dict(steps=lct_sampler.ts.size - 1,
                   guidance=lct_sampler.cfg_scale, eta=lct_sampler.eta),
      seconds=time.perf_counter() - t0)
  if out:
    common.write_sheets(out, {f"{r}_scene": sheets[r] for r in ROWS})
  log(format_table(result))
  return result


def format_table(result: dict) -> str:
  rows = result["rows"]
  pm = common.pm
  width = 24
  n, shots, seeds = result["scenes"], result["shots_per_scene"], result["seeds"]
  lines = [f"scene context: {n} held-out {shots}-shot scenes x {seeds} seed "
           "sets (mean +- std over sets); cross-shot consistency, chance in "
           "brackets",
           f"{'':22s}" + "".join(f"{ROW_LABELS[r][:width - 2]:>{width}s}"
                                 for r in ROWS)]
  def line(label, key, chance_key=None):
    cells = []
    for r in ROWS:
      cell = pm(rows[r][key])
      if chance_key:
        cell += f" ({rows[r][chance_key][0]:.2f})"
      cells.append(f"{cell:>{width}s}")
    return f"{label:22s}" + "".join(cells)
  lines.append(line("recognised", "recognised"))
  for f in FACTORS:
    lines.append(line(f + (" (no prompt)" if f == "tint" else ""),
                      f"consistency/{f}", f"chance/{f}"))
  for f in ADHERENCE:
    lines.append(line(f"adherence {f.split('_')[0]}", f"adherence/{f}",
                      f"adherence_chance/{f}"))
  return "\n".join(lines)


def plot(result: dict, path: str) -> None:
  plt = common.pyplot()
  factors = FACTORS
  x = np.arange(len(factors))
  bar = 0.27
  fig, ax = plt.subplots(figsize=(8, 3.6))
  for i, r in enumerate(ROWS):
    s = result["rows"][r]
    means = [s[f"consistency/{f}"][0] for f in factors]
    stds = [s[f"consistency/{f}"][1] for f in factors]
    xs = x + (i - 1) * bar
    ax.bar(xs, means, bar, yerr=stds, capsize=2, label=ROW_LABELS[r])
    chance = [s[f"chance/{f}"][0] for f in factors]
    ax.hlines(chance, xs - bar / 2, xs + bar / 2, colors="black",
              linewidth=1.5, label="chance" if i == 0 else None)
  ax.set_xticks(x, [f + "\n(no prompt)" if f == "tint" else f
                    for f in factors])
  ax.set_ylim(0, 1.3)                # room for the legend above the bars
  ax.set_ylabel("cross-shot consistency")
  ax.set_title(f"Scene context: {result['scenes']} held-out scenes x "
               f"{result['seeds']} seed sets (mean, std over sets)")
  ax.legend(fontsize=8, loc="upper center", ncol=4)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv=None):
  p = common.parser(__doc__, seeds=3, sheets=True)
  p.add_argument("--lct", required=True, help="scene-stage (lct) workdir")
  p.add_argument("--single", required=True,
                 help="single-shot (max_shots = 1) workdir, same compute")
  return common.main(p, argv, run, plot)


if __name__ == "__main__":
  main()
