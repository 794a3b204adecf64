r"""Experiment 5: the paper's emergent capabilities (section 9 of the notes),
measured as rates on held-out synthetic scenes against controls.

  python -m lct_jax.experiments.capabilities --lct runs/demo_long \
      --scenes 32 --seeds 3 --png docs/capabilities.png \
      --json docs/capabilities.json --out out/capabilities  # + sheets

The bidirectional LCT model generates with clean condition shots (t_c = 0,
`Sampler.joint`); each control generates the same shots from the same
prompts and noise without the conditions.
  composition    an identity image (frame 1 of held-out scene A) and an
                 environment image (frame 1 of scene B, whose tint and
                 background colour differ from A's) as 1-frame condition
                 shots; the global prompt names A's sprite on B's
                 background; a new shot is generated. Composed: the shot
                 has A's shape, sprite colour and size and B's background
                 colour, texture and tint. The tint is the test no prompt
                 can pass: it must come from the environment image.
  extension      a continuous held-out take (no "[SHOT CUT]"): its first
                 segment given, the second generated from its prompt.
                 Continued: the sprite's first-frame centroid is within
                 TRACK_TOLERANCE px of where the take continues (the
                 centroid in the held-out second segment), and the framing
                 is the first segment's.
  interpolation  a held-out scene of >= 3 shots with its first and last
                 shots given, the middle ones generated jointly.
                 Interpolated: a middle shot agrees with both ends on every
                 scene factor (identity and environment); the tint again
                 only through the conditions.
Rates are over generated shots, means and sample standard deviations over
`--seeds` disjoint seed sets. Chance for each rate: the same test against
every other case's conditions (other scenes' ends, other takes' tracks).

Inputs are checked before any sampling: `--lct` must be a bidirectional
scene-stage run of at least 3 shots, `--scenes` at least 32, `--seeds` at
least 2.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from lct_jax import evaluate
from lct_jax.data import estimators, transform
from lct_jax.data import synthetic as syn
from lct_jax.experiments import common
from lct_jax.sampling import media

CAPABILITIES = ("composition", "extension", "interpolation")
ROWS = ("conditioned", "control")
TRACK_TOLERANCE = 1.5              # px at 32 x 32: the generator moves >= 1
                                   # px per frame, so a restart misses it
SHEETS = 3
# Per capability: (figure, what it is) in table order; the first is the rate.
FIGURES = {
    "composition": (("composed", "all six factors: A's identity + B's "
                     "environment"),
                    ("tint_from_environment", "tint = B's (no prompt)"),
                    ("tint_from_identity", "tint = A's"),
                    ("identity", "shape, colour, size = A's"),
                    ("environment", "background, texture, tint = B's")),
    "extension": (("continued", "track continues and framing kept"),
                  ("track", "track continues"),
                  ("framing", "framing kept")),
    "interpolation": (("interpolated", "every scene factor = the ends'"),
                      ("tint", "tint = the ends' (no prompt)")),
}


def check_inputs(config) -> None:
  common.check_bidirectional("--lct", config)
  if config.scene.max_shots < 3:
    raise ValueError(f"--lct must hold >= 3 shots (composition conditions on "
                     f"2 images; interpolation on 2 ends); this one has "
                     f"scene.max_shots {config.scene.max_shots}")


def _latents(config, frames_FxHxWx3) -> np.ndarray:
  """A shot's pixels as the pixel-space model's latents, padded to
  scene.frames (as the training pipeline converts them)."""
  s = config.scene
  out = np.zeros((s.frames, s.height, s.width, 3), np.float32)
  out[:len(frames_FxHxWx3)] = transform.pixels_to_latents(frames_FxHxWx3)
  return out


def _given(config, shot, drawn_shot, frames=None):
  """`shot` (a sampler Shot) as a clean condition showing `frames` (default
  the drawn shot's)."""
  frames = drawn_shot.frames if frames is None else frames
  return dataclasses.replace(shot, latents=_latents(config, frames),
                             num_frames=len(frames), t_c=0.0)


def _scenes(config, count, seed_set, keep, max_shots=None):
  """The first `count` held-out scenes of `seed_set` that `keep` accepts."""
  out, batch = [], count
  while len(out) < count:
    batch *= 2
    drawn = evaluate.held_out_scenes(config, batch, seed_set=seed_set,
                                     max_shots=max_shots)
    out = [d for d in drawn if keep(d)][:count]
  return out


# --- composition --------------------------------------------------------------


def composition_cases(config, count: int, seed_set: int) -> list[tuple]:
  """(A, B) pairs: B is the next held-out scene whose tint and background
  colour both differ from A's."""
  pool = _scenes(config, 2 * count, seed_set, lambda d: True)
  cases = []
  for i, a in enumerate(pool[:count]):
    fa = a.shots[0].factors
    b = next(d for d in pool[i + 1:] + pool[:i]
             if d.shots[0].factors["tint"] != fa["tint"]
             and d.shots[0].factors["background_color"]
             != fa["background_color"])
    cases.append((a, b))
  return cases


def composition_prompt(a, b) -> str:
  fa, fb = a.shots[0].factors, b.shots[0].factors
  return syn.global_prompt(dict(
      size=fa["size"], sprite_color=fa["sprite_color"], shape=fa["shape"],
      texture=fb["texture"], background_color=fb["background_color"]))


def compose(config, sampler, a, b, seed: int, *, conditioned: bool):
  """-> (frames of the generated shot, frames of the conditions shown)."""
  image = lambda d: d.shots[0].frames[:1]
  image_prompt = lambda d: syn.shot_prompt(d.shots[0].factors["framing"],
                                           "still", True)
  target = a.shots[0]
  prompts = [image_prompt(a), image_prompt(b), target.prompt]
  frames = [1, 1, len(target.frames)]
  scene = evaluate.sampler_scene(config, composition_prompt(a, b), prompts,
                                 frames, seed)
  if conditioned:
    scene.shots[0] = _given(config, scene.shots[0], a.shots[0], image(a))
    scene.shots[1] = _given(config, scene.shots[1], b.shots[0], image(b))
    z = sampler.joint(scene)[2]
  else:
    z = sampler.joint(dataclasses.replace(scene, shots=scene.shots[2:]))[0]
  return media.to_frames(z, frames[2]), [image(a), image(b)]


def composition_figures(estimate, a, b) -> dict:
  e, fa, fb = estimate.factors, a.shots[0].factors, b.shots[0].factors
  identity = all(e[f] == fa[f] for f in estimators.IDENTITY)
  environment = all(e[f] == fb[f] for f in estimators.ENVIRONMENT)
  return dict(composed=identity and environment,
              tint_from_environment=e["tint"] == fb["tint"],
              tint_from_identity=e["tint"] == fa["tint"],
              identity=identity, environment=environment)


# --- extension ----------------------------------------------------------------


def extension_cases(config, count: int, seed_set: int) -> list:
  """Continuous held-out takes (no cuts) of >= 2 segments."""
  return _scenes(config, count, seed_set, lambda d: d.continuous)


def extend(config, sampler, drawn, seed: int, *, conditioned: bool):
  """-> (frames of the generated second segment, [first segment])."""
  first, second = drawn.shots[:2]
  scene = evaluate.sampler_scene(
      config, drawn.global_prompt, [first.prompt, second.prompt],
      [len(first.frames), len(second.frames)], seed)
  if conditioned:
    scene.shots[0] = _given(config, scene.shots[0], first)
    z = sampler.joint(scene)[1]
  else:
    z = sampler.joint(dataclasses.replace(scene, shots=scene.shots[1:]))[0]
  return media.to_frames(z, len(second.frames)), [first.frames]


def extension_figures(estimate, drawn, truth=None) -> dict:
  """Against the held-out second segment: where its sprite starts (the
  estimator's centroid on the true frames, `truth` if given, so
  conventions cancel) and the first segment's framing."""
  truth = truth or estimators.estimate_shot(drawn.shots[1].frames)
  track = (estimate.centroids_Fx2 is not None
           and truth.centroids_Fx2 is not None
           and float(np.max(np.abs(estimate.centroids_Fx2[0]
                                   - truth.centroids_Fx2[0])))
           <= TRACK_TOLERANCE)
  framing = estimate.factors["framing"] == drawn.shots[0].factors["framing"]
  return dict(continued=bool(track and framing), track=bool(track),
              framing=framing)


# --- interpolation ------------------------------------------------------------


def interpolation_cases(config, count: int, seed_set: int) -> list:
  """Held-out scenes with cuts of >= 3 shots."""
  return _scenes(config, count, seed_set,
                 lambda d: not d.continuous and len(d.shots) >= 3)


def interpolate(config, sampler, drawn, seed: int, *, conditioned: bool):
  """-> ([frames of each generated middle shot], [first, last shot])."""
  shots = drawn.shots
  scene = evaluate.sampler_scene(config, drawn.global_prompt,
                                 [s.prompt for s in shots],
                                 [len(s.frames) for s in shots], seed)
  if conditioned:
    for k in (0, len(shots) - 1):
      scene.shots[k] = _given(config, scene.shots[k], shots[k])
  z = sampler.joint(scene)
  return ([media.to_frames(z[k], len(shots[k].frames))
           for k in range(1, len(shots) - 1)],
          [shots[0].frames, shots[-1].frames])


def interpolation_figures(estimate, drawn) -> dict:
  truth = drawn.shots[0].factors          # the ends share every scene factor
  e = estimate.factors
  return dict(interpolated=all(e[f] == truth[f] for f in syn.SCENE_FACTORS),
              tint=e["tint"] == truth["tint"])


# --- the experiment -----------------------------------------------------------


def _rate(values) -> float:
  return float(np.mean(values)) if len(values) else float("nan")


def measure(config, sampler, scenes: int, seed_set: int, *,
            conditioned: bool, sheets: dict | None = None) -> dict:
  """{capability: {figure: rate, figure/chance: rate}} on one seed set;
  chance: the figure against every other case's conditions."""
  base = evaluate.SEED_SET_STRIDE * seed_set
  out = {}
  cases = {"composition": composition_cases(config, scenes, seed_set),
           "extension": extension_cases(config, scenes, seed_set),
           "interpolation": interpolation_cases(config, scenes, seed_set)}
  generate = {"composition": lambda c, s: compose(config, sampler, *c, s,
                                                  conditioned=conditioned),
              "extension": lambda c, s: extend(config, sampler, c, s,
                                               conditioned=conditioned),
              "interpolation": lambda c, s: interpolate(
                  config, sampler, c, s, conditioned=conditioned)}
  second = {d.scene_id: estimators.estimate_shot(d.shots[1].frames)
            for d in cases["extension"]}
  judge = {"composition": lambda e, c: composition_figures(e, *c),
           "extension": lambda e, d: extension_figures(e, d,
                                                       second[d.scene_id]),
           "interpolation": interpolation_figures}
  for cap in CAPABILITIES:
    own, chance, recognised = [], [], []
    for i, case in enumerate(cases[cap]):
      frames, shown = generate[cap](case, base + 1000 * i)
      shots = frames if cap == "interpolation" else [frames]
      others = cases[cap][:i] + cases[cap][i + 1:]
      for f in shots:
        e = estimators.estimate_shot(f)
        own.append(judge[cap](e, case))
        chance += [judge[cap](e, other) for other in others]
        recognised.append(e.recognised)
      if sheets is not None and i < SHEETS:
        sheets[cap].append(media.contact_sheet(
            [media.enlarge(x, 64) for x in shown + shots]))
    out[cap] = {k: _rate([o[k] for o in own]) for k in own[0]}
    out[cap].update({f"{k}/chance": _rate([c[k] for c in chance])
                     for k in chance[0]})
    out[cap]["recognised"] = _rate(recognised)
    out[cap]["shots"] = len(own)
  return out


def run(lct: str, *, scenes: int = common.MIN_SCENES, seeds: int = 3,
        steps=None, out: str | None = None, log=print) -> dict:
  common.check_counts(scenes, seeds)
  config = common.run_config("--lct", lct)
  check_inputs(config)
  config, sampler, step = evaluate.load_sampler(lct, steps=steps)
  per_seed = {r: [] for r in ROWS}
  sheets = {r: {c: [] for c in CAPABILITIES} for r in ROWS}
  for seed_set in range(seeds):
    for r in ROWS:
      per_seed[r].append(measure(
          config, sampler, scenes, seed_set, conditioned=r == "conditioned",
          sheets=sheets[r] if out and seed_set == 0 else None))
    log(f"seed set {seed_set}: " + ", ".join(
        f"{c} {per_seed['conditioned'][-1][c][FIGURES[c][0][0]]:.3f} "
        f"(control {per_seed['control'][-1][c][FIGURES[c][0][0]]:.3f})"
        for c in CAPABILITIES))
  rows = {r: {c: {k: common.mean_std([p[c][k] for p in per_seed[r]])
                  for k in per_seed[r][0][c]} for c in CAPABILITIES}
          for r in ROWS}
  result = dict(rows=rows, per_seed=per_seed, lct=dict(workdir=lct,
                                                       step=step),
                scenes=scenes, seeds=seeds,
                sampler=dict(steps=sampler.ts.size - 1,
                             guidance=sampler.cfg_scale, eta=sampler.eta))
  if out:
    common.write_sheets(out, {f"{c}_{r}": sheets[r][c] for r in ROWS
                              for c in CAPABILITIES})
  log(format_table(result))
  return result


def format_table(result: dict) -> str:
  rows, s = result["rows"], result["sampler"]
  lines = [f"emergent capabilities: {result['scenes']} held-out cases x "
           f"{result['seeds']} seed sets (mean +- std over sets); "
           f"{s['steps']} Euler steps, guidance {s['guidance']}, eta "
           f"{s['eta']}; chance: against other cases' conditions",
           f"{'':15s} {'figure':48s} {'conditioned':>15s} {'chance':>6s} "
           f"{'control':>15s}"]
  for cap in CAPABILITIES:
    c, k = rows["conditioned"][cap], rows["control"][cap]
    for i, (fig, what) in enumerate(FIGURES[cap] + (
        ("recognised", "recognised shots"),)):
      chance = c.get(f"{fig}/chance")
      lines.append(f"{cap if i == 0 else '':15s} {what:48s} "
                   f"{common.pm(c[fig]):>15s} "
                   f"{'' if chance is None else f'{chance[0]:.2f}':>6s} "
                   f"{common.pm(k[fig]):>15s}")
  return "\n".join(lines)


def plot(result: dict, path: str) -> None:
  plt = common.pyplot()
  rows = result["rows"]
  figs = [(cap, fig, what) for cap in CAPABILITIES
          for fig, what in FIGURES[cap][:2]]
  x = np.arange(len(figs))
  fig_, ax = plt.subplots(figsize=(9, 3.8))
  for i, (r, label) in enumerate((("conditioned", "with the conditions"),
                                  ("control", "control: no conditions"))):
    xs = x + (i - 0.5) * 0.38
    ax.bar(xs, [rows[r][c][f][0] for c, f, _ in figs], 0.38,
           yerr=[rows[r][c][f][1] for c, f, _ in figs], capsize=2,
           label=label)
  ax.hlines([rows["conditioned"][c][f"{f}/chance"][0] for c, f, _ in figs],
            x - 0.38, x + 0.38, colors="black", linewidth=1.5,
            label="chance (other cases' conditions)")
  ax.set_xticks(x, [f"{c}\n{f.replace('_', ' ')}" for c, f, _ in figs],
                fontsize=7)
  ax.set_ylim(0, 1.25)
  ax.set_ylabel("rate over generated shots")
  ax.set_title(f"Emergent capabilities: {result['scenes']} held-out cases x "
               f"{result['seeds']} seed sets (mean, std over sets)")
  ax.legend(fontsize=8, loc="upper center", ncol=3)
  fig_.tight_layout()
  fig_.savefig(path, dpi=100)
  plt.close(fig_)


def main(argv=None):
  p = common.parser(__doc__, seeds=3, sheets=True)
  p.add_argument("--lct", required=True,
                 help="bidirectional scene-stage (lct) workdir")
  return common.main(p, argv, run, plot)


if __name__ == "__main__":
  main()
