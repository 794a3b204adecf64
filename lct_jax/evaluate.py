r"""Held-out evaluation of a synthetic-scene run: recognition, prompt
adherence and cross-shot consistency, each next to its chance level.

  python -m lct_jax.evaluate --workdir runs/demo --scenes 32
  python -m lct_jax.evaluate --workdir runs/demo --scenes 64 --steps 30 \
      --guidance 2 --out out/eval     # + eval.json and contact sheets
  python -m lct_jax.evaluate --workdir runs/demo --scenes 32 --alone
                                      # each shot sampled on its own
  python -m lct_jax.evaluate --workdir runs/demo --scenes 32 --seed-set 1
                                      # other held-out scenes and noise

The scenes are drawn from the synthetic generator at seeds no training run
reads (HELD_OUT_SEED onwards; runs read data.synthetic_seed +
[0, data.num_scenes)), keeping those with >= 2 shots (>= 1 for a
single-shot run), and generated
jointly from their prompts alone (no condition shots), or with --alone
each shot as a one-shot scene of its own with the same prompts and seed:
the control that shows what the scene context gives. Scores are those of
`lct_jax.data.consistency.score_scenes`; "chance" is the same statistic
over shots of different scenes (consistency) or against other scenes'
prompts (adherence); "truth" is agreement with the factors the held-out
scene was drawn with (the tint is in no prompt, so its truth figure is
chance by design; its consistency is what scene context must give).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import numpy as np

from lct_jax.data import consistency, estimators, synthetic, transform, vocab
from lct_jax.sampling import load, media, outputs
from lct_jax.sampling.sampler import Sampler, Scene, Shot, shot_noise
from lct_jax.training.state import abstract_model

HELD_OUT_SEED = 1_000_000_000
# Held-out set k starts at HELD_OUT_SEED + k * SEED_SET_STRIDE (scene seeds)
# and samples with noise seeds offset by as much: disjoint sets of scenes
# and noise, for the spread of a figure over seeds.
SEED_SET_STRIDE = 1_000_000


def check_synthetic_run(config, workdir: str) -> None:
  if not outputs.is_synthetic_model(config):
    raise ValueError(
        f"{workdir} was not trained on the synthetic scenes (data.source="
        f"{config.data.source!r}, model.in_channels="
        f"{config.model.in_channels}, model.text_mode="
        f"{config.model.text_mode!r}); this evaluation reads factors back "
        "from synthetic pixels and cannot judge it")
  d = config.data
  if d.synthetic_seed + d.num_scenes > HELD_OUT_SEED:
    raise ValueError(f"data.synthetic_seed + data.num_scenes reaches the "
                     f"held-out seeds ({HELD_OUT_SEED}); the scenes would "
                     "not be held out")


def held_out_scenes(config, count: int, *, seed_set: int = 0,
                    max_shots: int | None = None,
                    min_shots: int | None = None) -> list:
  """The first `count` generator scenes of held-out set `seed_set` (seeds
  HELD_OUT_SEED + SEED_SET_STRIDE * seed_set onwards) with >= `min_shots`
  shots (default 2; 1 for a single-shot run: recognition and adherence,
  no cross-shot consistency), at the run's frame limit and at `max_shots`
  shots (the run's own by default; a scene run's count lets a single-shot
  model be judged, shot by shot, on the scene run's scenes; more than the
  run's window, for auto-regressive generation with a history window)."""
  s = config.scene
  max_shots = max_shots or s.max_shots
  min_shots = min_shots or min(2, max_shots)
  if not 1 <= min_shots <= max_shots:
    raise ValueError(f"min_shots={min_shots} must be in [1, max_shots="
                     f"{max_shots}]")
  scenes, seed = [], HELD_OUT_SEED + SEED_SET_STRIDE * seed_set
  while len(scenes) < count:
    scene = synthetic.generate_scene(seed, max_shots=max_shots,
                                     max_frames=s.frames, size=s.height)
    seed += 1
    if len(scene.shots) >= min_shots:
      scenes.append(scene)
  return scenes


def sampler_scene(config, global_prompt: str, prompts: list[str],
                  num_frames: list[int], seed: int) -> Scene:
  """A sampler Scene from prompts in the demo vocabulary (an unknown word is
  an error naming it); shot k draws noise seed `seed + k`."""
  L = config.scene.max_text_len
  enc = lambda p: vocab.encode(p, L, truncate=False, allow_unknown=False)
  shots = [Shot(*enc(p), num_frames=n, seed=seed + k)
           for k, (p, n) in enumerate(zip(prompts, num_frames))]
  return Scene(*enc(global_prompt), shots)


def _drawn_scene(config, drawn, seed: int) -> Scene:
  """A held-out scene's prompts and shot lengths as a sampler Scene."""
  return sampler_scene(config, drawn.global_prompt,
                       [s.prompt for s in drawn.shots],
                       [len(s.frames) for s in drawn.shots], seed)


def held_out_truth(config, sampler, drawn, index: int):
  """-> (batch, x, eps) of held-out scene `index` (seed set 0): the
  sampler's batch for its prompts, its true shots as latents [1, N, F, H,
  W, C] (padding zero) and each shot's starting noise as
  `generate_held_out` draws it. For the benchmarks that noise the truth
  to some t and look at what the model makes of it."""
  scene = _drawn_scene(config, drawn, seed=1000 * index)
  batch = sampler._scene_batch(scene, scene.shots, [None] * len(scene.shots))  # pylint: disable=protected-access
  x = np.zeros((1, sampler.geom.max_shots) + sampler.shot_shape, np.float32)
  eps = np.zeros_like(x)
  for k, (truth, shot) in enumerate(zip(drawn.shots, scene.shots)):
    x[0, k, :len(truth.frames)] = transform.pixels_to_latents(truth.frames)
    eps[0, k] = shot_noise(shot.seed, sampler.shot_shape)[0]
  return batch, x, eps


def load_sampler(workdir: str, *, steps=None, guidance=None, shift=None,
                 eta=None, t_c=None, use_ema: bool = True,
                 step: int | None = None, capacity: int | None = None,
                 weights_from: str | None = None):
  """-> (config, sampler, step) of a synthetic-data run, sampling with the
  run's settings where an argument is None (`capacity`: KV cache slots,
  default the run's window). With `weights_from`, the parameters are that
  run's (the same shapes: LCT adds none), run under this run's config and
  step 0 is returned: a fine-tune before its first update, e.g. LCT
  weights under the context-causal mask."""
  config = load.load_config(workdir)
  check_synthetic_run(config, workdir)
  if weights_from is None:
    config, graphdef, params, step = load.load_model(
        workdir, use_ema=use_ema, config=config, step=step)
  else:
    _, _, params, _ = load.load_model(weights_from, use_ema=use_ema,
                                      step=step)
    graphdef, step = abstract_model(config)[0], 0
  sa = config.sample
  sampler = Sampler(config, graphdef, params,
                    steps=steps or sa.steps,
                    shift=shift or sa.shift,
                    cfg_scale=sa.cfg_scale if guidance is None else guidance,
                    eta=sa.eta if eta is None else eta,
                    t_c=sa.t_c if t_c is None else t_c, capacity=capacity)
  return config, sampler, step


MODES = ("joint", "alone", "causal", "bidirectional_ar")


def history_pools(num_shots: int, window: int | None = None) -> list[tuple]:
  """Each shot's history in shot-by-shot generation: the `window` shots
  before it (all earlier shots when None)."""
  return [tuple(range(0 if window is None else max(0, k - window), k))
          for k in range(num_shots)]


def generate_held_out(config, sampler, count: int, *, mode: str = "joint",
                      seed_set: int = 0, max_shots: int | None = None,
                      min_shots: int | None = None,
                      window: int | None = None):
  """Yields (held-out scene, its shots' generated frames), scene i of set
  `seed_set` from noise seed SEED_SET_STRIDE * seed_set + 1000 * i, shot k
  from that + k, generated by `mode`:
    joint             all shots together (`Sampler.joint`);
    alone             each shot as a one-shot scene of its own (the same
                      global and shot prompt and seed), so no shot sees
                      another: the control for what scene context gives;
    causal            shot after shot against the KV cache
                      (`Sampler.causal`; a context-causal run);
    bidirectional_ar  shot after shot, the history re-run as conditions
                      (`Sampler.bidirectional_ar`).
  In the last two, shot k's history is `history_pools(n, window)[k]`.
  `max_shots` and `min_shots` as in `held_out_scenes`."""
  if mode not in MODES:
    raise ValueError(f"mode={mode!r}: one of {MODES}")
  drawn_scenes = held_out_scenes(config, count, seed_set=seed_set,
                                 max_shots=max_shots, min_shots=min_shots)
  for i, drawn in enumerate(drawn_scenes):
    scene = _drawn_scene(config, drawn,
                         seed=SEED_SET_STRIDE * seed_set + 1000 * i)
    if mode == "alone":
      latents = [sampler.joint(dataclasses.replace(scene, shots=[shot]))[0]
                 for shot in scene.shots]
    elif mode == "joint":
      if len(scene.shots) > config.scene.max_shots:
        raise ValueError(
            f"scenes of {len(scene.shots)} shots cannot be generated jointly "
            f"by a run of scene.max_shots={config.scene.max_shots}; sample "
            "them alone")
      latents = sampler.joint(scene)
    else:
      pools = history_pools(len(scene.shots), window)
      scene.shots = [dataclasses.replace(s, history=p)
                     for s, p in zip(scene.shots, pools)]
      latents = getattr(sampler, mode)(scene)
    yield drawn, [media.to_frames(z, len(s.frames))
                  for z, s in zip(latents, drawn.shots)]


def scene_sheet(drawn, frames) -> np.ndarray:
  """A contact sheet: the generated shots' rows, then the held-out truth's,
  each frame enlarged to 64 px."""
  return media.contact_sheet([media.enlarge(f, 64) for f in frames]
                             + [media.enlarge(s.frames, 64)
                                for s in drawn.shots])


def scene_record(drawn, frames) -> dict:
  """One generated scene as `consistency.score_scenes` reads it: the
  factors estimated from each generated shot, the prompts it was generated
  from, and the factors the held-out scene was drawn with."""
  return dict(estimates=[estimators.estimate_shot(f) for f in frames],
              prompts=[s.prompt for s in drawn.shots],
              global_prompt=drawn.global_prompt,
              truth=[s.factors for s in drawn.shots])


def evaluate(workdir: str, *, scenes: int = 32, steps=None, guidance=None,
             shift=None, eta=None, use_ema: bool = True,
             out: str | None = None,
             step: int | None = None, alone: bool = False,
             seed_set: int = 0, log=print) -> dict:
  """Generates and scores held-out scenes; -> the `score_scenes` table
  plus the run's step and the seconds it took."""
  config, sampler, step = load_sampler(workdir, steps=steps,
                                       guidance=guidance, shift=shift,
                                       eta=eta, use_ema=use_ema, step=step)
  records, sheets = [], []
  t0 = time.perf_counter()
  for i, (drawn, frames) in enumerate(generate_held_out(
      config, sampler, scenes, mode="alone" if alone else "joint",
      seed_set=seed_set)):
    records.append(scene_record(drawn, frames))
    if out and i < 8:
      sheets.append(scene_sheet(drawn, frames))
  table = consistency.score_scenes(records)
  table["evidence"] = estimators.evidence_summary(
      [e for r in records for e in r["estimates"]])
  table.update(step=step, seconds=time.perf_counter() - t0,
               steps=sampler.ts.size - 1, guidance=sampler.cfg_scale,
               eta=sampler.eta, generation="alone" if alone else "joint",
               seed_set=seed_set,
               weights="ema" if use_ema else "raw")
  if out:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "eval.json"), "w") as f:
      json.dump(outputs._jsonable(table), f, indent=1, sort_keys=True)  # pylint: disable=protected-access
    for i, sheet in enumerate(sheets):
      media.write_png(os.path.join(out, f"scene_{i:02d}.png"), sheet)
  log(format_table(table))
  return table


def format_table(t: dict) -> str:
  f3 = lambda x: "  n/a" if x is None or np.isnan(x) else f"{x:5.3f}"
  lines = [f"held-out scenes {t['scenes']} ({t['shots']} shots), step "
           f"{t.get('step')}, {t.get('generation', 'joint')} generation, "
           f"{t.get('steps')} Euler steps, guidance {t.get('guidance')}, "
           f"eta {t.get('eta')}, seed set {t.get('seed_set', 0)}",
           f"recognised shots: {f3(t['recognised'])} (garbage: <= 0.05; "
           "ground truth: 1.000)",
           f"{'factor':18s} {'consistency':>11s} {'chance':>6s}   "
           f"{'adherence':>9s} {'chance':>6s}   {'truth':>5s}"]
  acc = t.get("accuracy", {})
  for f in estimators.ALL_FACTORS:
    cons = t["consistency"].get(f)
    cons_c = t["consistency_chance"].get(f)
    adh = t["global_adherence"].get(f, t["adherence"].get(f))
    adh_c = t["global_adherence_chance"].get(
        f, t["adherence_chance"].get(f))
    lines.append(f"{f:18s} {f3(cons):>11s} {f3(cons_c):>6s}   "
                 f"{f3(adh):>9s} {f3(adh_c):>6s}   {f3(acc.get(f)):>5s}")
  for kind, label in (("radius_px", "sprite radius (px)"),
                      ("motion", "motion")):
    groups = t.get("recognised_by", {}).get(kind)
    if groups:
      lines.append(f"recognised by {label}: " + "  ".join(
          f"{k} {f3(g['recognised'])} ({g['shots']})"
          for k, g in groups.items()))
  if "evidence" in t:
    lines.append(f"{'evidence':20s} {'median':>7s} {'threshold':>10s} "
                 f"{'within':>6s}")
    for key, e in t["evidence"].items():
      bound = f"{'<=' if e['at_most'] else '>='} {e['threshold']:g}"
      lines.append(f"{key:20s} {e['median']:7.3f} {bound:>10s} "
                   f"{f3(e['within']):>6s}")
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--scenes", type=int, default=32)
  p.add_argument("--steps", type=int, default=None)
  p.add_argument("--guidance", type=float, default=None)
  p.add_argument("--shift", type=float, default=None)
  p.add_argument("--eta", type=float, default=None,
                 help="sampler noise, 0 (Euler ODE) to 1 (DDPM)")
  p.add_argument("--raw", action="store_true", help="raw weights, not EMA")
  p.add_argument("--step", type=int, default=None,
                 help="this checkpoint step (default: the newest)")
  p.add_argument("--alone", action="store_true",
                 help="sample each shot as a one-shot scene of its own (the"
                      " control for scene context) instead of jointly")
  p.add_argument("--seed-set", type=int, default=0,
                 help="which disjoint set of held-out scenes and noise "
                      "seeds (0, 1, ...): the spread over sets is the "
                      "sampling error of a figure")
  p.add_argument("--out", default=None)
  a = p.parse_args(argv)
  if a.seed_set < 0:
    raise SystemExit(f"error: --seed-set must be >= 0, got {a.seed_set}")
  try:
    evaluate(a.workdir, scenes=a.scenes, steps=a.steps, guidance=a.guidance,
             shift=a.shift, eta=a.eta, use_ema=not a.raw, out=a.out,
             step=a.step, alone=a.alone, seed_set=a.seed_set)
  except (ValueError, load.CheckpointError) as e:
    raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
  main()
