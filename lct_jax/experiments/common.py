"""What every paper-claim experiment shares: checking its runs and counts
before any sampling (errors name the flag), the spread over seed sets, and
writing its JSON.

Runs are judged by their config.json alone, so a wrong workdir costs
milliseconds, not a model load.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from lct_jax import evaluate
from lct_jax.data import synthetic as syn
from lct_jax.sampling import load, media, outputs

MIN_SCENES = 32                    # held-out scenes per cell (issue minimum)
MIN_SEEDS = 2                      # a spread needs two seed sets
WARM_UP_SEED_SET = 999             # compiles the samplers; never scored


def run_config(flag: str, workdir: str):
  """The config of a synthetic-scene run given as `flag`; a missing or
  foreign workdir is an error naming the flag."""
  try:
    config = load.load_config(workdir)
  except load.CheckpointError as e:
    raise ValueError(f"{flag} {workdir!r}: {e}") from None
  try:
    evaluate.check_synthetic_run(config, workdir)
  except ValueError as e:
    raise ValueError(f"{flag}: {e}") from None
  return config


def describe(config) -> str:
  return (f"stage {config.train.stage!r}, scene.max_shots "
          f"{config.scene.max_shots}, attention "
          f"{config.model.attention_mask!r}")


def check_bidirectional(flag: str, config) -> None:
  """A bidirectional scene-stage (lct) run."""
  if (config.train.stage != "lct" or config.scene.max_shots < 2
      or config.model.attention_mask != "bidirectional"):
    raise ValueError(f"{flag} must be a bidirectional scene-stage run "
                     f"(train.stage 'lct', scene.max_shots >= 2); this one "
                     f"is {describe(config)}")


def check_causal(flag: str, config) -> None:
  """A context-causal fine-tune (the causal stage)."""
  if (config.model.attention_mask != "context_causal"
      or config.scene.max_shots < 2):
    raise ValueError(f"{flag} must be a context-causal run (train.stage "
                     f"'causal', scene.max_shots >= 2); this one is "
                     f"{describe(config)}")


def check_same_scenes(flags: tuple[str, str], a, b,
                      keys=("max_shots", "frames", "height", "width",
                            "max_text_len")) -> None:
  """Two runs that must draw the same held-out scenes."""
  for key in keys:
    if a.scene[key] != b.scene[key]:
      raise ValueError(f"{flags[0]} and {flags[1]} differ in scene.{key} "
                       f"({a.scene[key]} against {b.scene[key]}): they "
                       "cannot draw the same scenes")


def check_same_model(flags: tuple[str, str], a, b) -> None:
  """Two runs whose parameters are interchangeable: every model field but
  the attention mask (which adds no parameters) the same."""
  ma, mb = a.model.to_dict(), b.model.to_dict()
  diff = sorted(k for k in ma.keys() | mb.keys()
                if k != "attention_mask" and ma.get(k) != mb.get(k))
  if diff:
    raise ValueError(f"{flags[0]} and {flags[1]} are different models "
                     f"(model.{diff[0]}: {ma.get(diff[0])!r} against "
                     f"{mb.get(diff[0])!r}); their weights do not fit each "
                     "other")


def check_counts(scenes: int, seeds: int) -> None:
  if scenes < MIN_SCENES:
    raise ValueError(f"--scenes must be >= {MIN_SCENES} held-out scenes per "
                     f"cell, got {scenes}")
  if seeds < MIN_SEEDS:
    raise ValueError(f"--seeds must be >= {MIN_SEEDS} (the spread over seed "
                     f"sets is reported), got {seeds}")


def mean_std(values) -> tuple[float, float]:
  """(mean, sample standard deviation with ddof 1) over seed sets,
  ignoring NaN."""
  v = np.asarray(values, float)
  v = v[~np.isnan(v)]
  if v.size == 0:
    return float("nan"), float("nan")
  return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def pm(ms) -> str:
  return f"{ms[0]:.3f} +- {ms[1]:.3f}"


def fidelity_summary(fidelities: list[dict]) -> dict:
  """Per-seed `fidelity.score_sequences` results -> {figure: (mean, std
  over seed sets)}: fidelity per scene factor next to its chance, and both
  averaged over the factors."""
  out = {"fidelity_mean": mean_std([d["fidelity_mean"] for d in fidelities]),
         "fidelity_mean_chance": mean_std([d["fidelity_mean_chance"]
                                           for d in fidelities])}
  for f in syn.SCENE_FACTORS:
    out[f"fidelity/{f}"] = mean_std([d["fidelity"][f] for d in fidelities])
    out[f"fidelity_chance/{f}"] = mean_std([d["fidelity_chance"][f]
                                            for d in fidelities])
  return out


def write_sheets(out: str, sheets: dict[str, list]) -> None:
  """Contact sheets as out/{name}_{i}.png."""
  os.makedirs(out, exist_ok=True)
  for name, images in sheets.items():
    for i, image in enumerate(images):
      media.write_png(os.path.join(out, f"{name}_{i}.png"), image)


def parser(doc: str, *, seeds: int, sheets: bool) -> argparse.ArgumentParser:
  """An experiment's command line: the flags every experiment shares
  (`--scenes`, `--seeds`, `--steps`, `--png`, `--json`, and `--out` for
  those that write contact sheets); the caller adds its runs' flags."""
  p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
  p.add_argument("--scenes", type=int, default=MIN_SCENES,
                 help=f"held-out scenes per cell (>= {MIN_SCENES})")
  p.add_argument("--seeds", type=int, default=seeds,
                 help="disjoint seed sets; the spread over them is reported")
  p.add_argument("--steps", type=int, default=None,
                 help="sampler steps (default: the runs' own)")
  p.add_argument("--png", default=None, help="plot (needs the bench extra)")
  p.add_argument("--json", default=None, help="every figure, per seed set")
  if sheets:
    p.add_argument("--out", default=None,
                   help="folder for contact sheets of the first scenes")
  return p


def main(p: argparse.ArgumentParser, argv, run, plot) -> dict:
  """Parses `argv`, calls `run(**flags)` (all flags but --png and --json),
  and writes the JSON and the plot. Bad input -> SystemExit naming it."""
  flags = vars(p.parse_args(argv))
  png, path = flags.pop("png"), flags.pop("json")
  try:
    result = run(**flags)
  except (ValueError, load.CheckpointError) as e:
    raise SystemExit(f"error: {e}") from None
  if path:
    write_json(path, result)
  if png:
    plot(result, png)
  return result


def write_json(path: str, result: dict) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w") as f:
    json.dump(outputs._jsonable(result), f, indent=1)  # pylint: disable=protected-access


def pyplot():
  """matplotlib's pyplot on the Agg backend (`pip install -e ".[bench]"`)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def generate(config, sampler, scenes: int, seed_set: int, *, mode: str,
             max_shots: int | None = None, min_shots: int | None = None,
             window: int | None = None, sheets: list | None = None,
             sheet_count: int = 3) -> tuple[list, list, float]:
  """Generates held-out scenes (`evaluate.generate_held_out`) and reads
  their factors back.

  -> (records for `consistency.score_scenes`, sequences for
  `fidelity.score_sequences` (each shot's history: its earlier shots, or
  the last `window` of them), seconds spent sampling, not scoring).
  Appends the first `sheet_count` scenes' contact sheets to `sheets` when
  given."""
  records, sequences, seconds = [], [], 0.0
  it = evaluate.generate_held_out(
      config, sampler, scenes, mode=mode, seed_set=seed_set,
      max_shots=max_shots, min_shots=min_shots, window=window)
  for i in range(scenes):
    t0 = time.perf_counter()
    drawn, frames = next(it)
    seconds += time.perf_counter() - t0
    record = evaluate.scene_record(drawn, frames)
    records.append(record)
    sequences.append(dict(estimates=record["estimates"],
                          pools=evaluate.history_pools(len(frames), window)))
    if sheets is not None and i < sheet_count:
      sheets.append(evaluate.scene_sheet(drawn, frames))
  return records, sequences, seconds


def warm_up(config, sampler, *, mode: str, **kwargs) -> None:
  """Compiles a mode's jitted sampling on one throwaway scene (a seed set
  no experiment reads), so that timings measure sampling, not tracing."""
  next(evaluate.generate_held_out(config, sampler, 1, mode=mode,
                                  seed_set=WARM_UP_SEED_SET, **kwargs))

