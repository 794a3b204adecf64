"""Scene-level scores of synthetic shots: recognition, cross-shot
consistency and prompt adherence, each next to its chance level.

Per-shot factor estimates come from `estimators` (UNKNOWN where a shot is
not what the generator draws). On top of them:

  recognised        fraction of shots whose identity (shape, sprite colour,
                    size) and environment (background colour, texture,
                    tint) are all known.
  consistency[f]    for each scene factor f, the fraction of shot *pairs*
                    of a scene that agree on f. UNKNOWN never agrees with
                    anything, not even another UNKNOWN. NaN for a
                    one-shot scene (no pair).
  adherence[f]      framing / action: fraction of shots matching what
                    their own prompt asks (shots that ask nothing for f
                    are left out).
  global_adherence  fraction of shots matching each factor the global
                    prompt states (never the tint).

Chance levels. A figure means nothing without the value that unrelated
shots would get:
  - `score_scene` reports the prior chance: shots of independently drawn
    synthetic scenes agree on a factor with probability sum_v p_v^2 =
    1 / (number of values) (the generator draws every scene factor
    uniformly), and a prompt is met by chance with probability 1 / V.
  - `score_scenes` (many scenes, e.g. a held-out evaluation) also reports
    the empirical chance of *these* shots: the same statistics over pairs
    of shots from different scenes, and over shots against other scenes'
    prompts. A model that draws the same red circle for every prompt scores
    consistency 1 but also chance 1; only the gap above chance is
    scene consistency.
"""
from __future__ import annotations

import itertools

import numpy as np

from lct_jax.data import synthetic as syn
from lct_jax.data import vocab
from lct_jax.data.estimators import (ALL_FACTORS, UNKNOWN, ShotEstimate,
                                     estimate_factors, estimate_shot)

__all__ = ["UNKNOWN", "estimate_factors", "estimate_shot", "score_scene",
           "score_scenes", "parse_global_prompt", "parse_shot_prompt",
           "PRIOR_CHANCE"]

VALUES = {
    "shape": syn.SHAPES, "sprite_color": tuple(syn.SPRITE_COLORS),
    "size": syn.SIZES, "background_color": tuple(syn.BACKGROUND_COLORS),
    "texture": syn.TEXTURES, "tint": tuple(syn.TINTS),
    "framing": syn.FRAMINGS, "action": tuple(syn.ACTIONS),
}
# Agreement of two independent uniform draws, and a uniform guess's hit
# rate: both 1 / V.
PRIOR_CHANCE = {f: 1.0 / len(v) for f, v in VALUES.items()}
GLOBAL_FACTORS = ("shape", "sprite_color", "size", "background_color",
                  "texture")


def parse_shot_prompt(prompt: str) -> dict:
  """Framing and action a shot prompt asks for (absent: not in the dict)."""
  tokens = vocab.tokenize(prompt)
  text = " ".join(tokens)
  asked = {}
  framings = [t for t in tokens if t in syn.FRAMINGS]
  if framings:
    asked["framing"] = framings[0]
  actions = [a for a, phrase in syn.ACTION_PHRASES.items() if phrase in text]
  if actions:
    asked["action"] = actions[0]
  return asked


def parse_global_prompt(prompt: str) -> dict:
  """Scene factors a global prompt states (the tint never is)."""
  tokens = set(vocab.tokenize(prompt))
  stated = {}
  for factor in GLOBAL_FACTORS:
    found = [n for n in VALUES[factor] if n in tokens]
    if found:
      stated[factor] = found[0]
  return stated


def agree(a: str, b: str) -> bool:
  return a == b and a != UNKNOWN


def pair_agreement(factors_a: list, factors_b: list | None = None) -> dict:
  """Fraction of agreeing pairs per scene factor: within one list of
  per-shot factor dicts (all pairs), or across two (every a with every b).
  NaN where there is no pair."""
  if factors_b is None:
    pairs = list(itertools.combinations(factors_a, 2))
  else:
    pairs = list(itertools.product(factors_a, factors_b))
  return {f: _mean([agree(a[f], b[f]) for a, b in pairs])
          for f in syn.SCENE_FACTORS}


def _hit_rate(factors: list, asked: list, names) -> dict:
  """Per factor: fraction of (shot, ask) pairs where the shot's estimate is
  what was asked (only pairs that ask for it); NaN when none asks."""
  return {f: _mean([e[f] == a[f] for e, a in zip(factors, asked) if f in a])
          for f in names}


def _mean(xs) -> float:
  return float(np.mean(xs)) if len(xs) else float("nan")


def nanmean(values) -> float:
  """Mean over the non-NaN values; NaN (no warning) when there are none."""
  return _mean([v for v in values if not np.isnan(v)])


def scene_stats(estimates: list[ShotEstimate], prompts: list[str],
                global_prompt: str | None = None) -> dict:
  """Every per-scene figure of the module docstring, with prior chance."""
  factors = [e.factors for e in estimates]
  consistency = pair_agreement(factors)
  asked = [parse_shot_prompt(p) for p in prompts]
  result = {
      "recognised": float(np.mean([e.recognised for e in estimates])),
      "consistency": consistency,
      "consistency_chance": {f: PRIOR_CHANCE[f] for f in syn.SCENE_FACTORS},
      "consistency_mean": nanmean(consistency.values()),
      "consistency_mean_chance": float(np.mean(
          [PRIOR_CHANCE[f] for f in syn.SCENE_FACTORS])),
      "adherence": _hit_rate(factors, asked, syn.SHOT_FACTORS),
      "adherence_chance": {f: PRIOR_CHANCE[f] for f in syn.SHOT_FACTORS},
  }
  if global_prompt is not None:
    stated = parse_global_prompt(global_prompt)
    result["global_adherence"] = _hit_rate(factors, [stated] * len(factors),
                                           stated)
    result["global_adherence_chance"] = {f: PRIOR_CHANCE[f] for f in stated}
  return result


def score_scene(shots_frames: list, prompts: list[str], *,
                global_prompt: str | None = None) -> dict:
  """Scores one scene from its shots' uint8 frames [F, S, S, 3] (module
  docstring), plus per-shot `estimates` and `evidence`."""
  if len(shots_frames) != len(prompts) or not prompts:
    raise ValueError(f"need one prompt per shot and >= 1 shot; got "
                     f"{len(shots_frames)} shots, {len(prompts)} prompts")
  estimates = [estimate_shot(f) for f in shots_frames]
  result = scene_stats(estimates, prompts, global_prompt)
  result["estimates"] = [e.factors for e in estimates]
  result["evidence"] = [e.evidence for e in estimates]
  return result


def score_scenes(scenes: list[dict]) -> dict:
  """Aggregates many scenes, with the empirical chance of these shots.

  Args:
    scenes: per scene, {"estimates": [ShotEstimate], "prompts": [str],
      "global_prompt": str} and optionally "truth": per shot the generator's
      factor dict (held-out scenes), for per-factor accuracy.
  Returns:
    recognised (over all shots); consistency[f] (mean over scenes with
    >= 2 shots) and consistency_chance[f] (pairs of shots from different
    scenes); global_adherence[f] / adherence[f] (over shots) and their
    chance (each shot against every other scene's prompts); accuracy[f]
    against the truth and recognised_by (`recognised_by_truth`) when
    given; the number of scenes and shots.
  """
  if not scenes:
    raise ValueError("score_scenes needs at least one scene")
  factors = [[e.factors for e in s["estimates"]] for s in scenes]
  flat = [f for fs in factors for f in fs]
  per_scene = [scene_stats(s["estimates"], s["prompts"], s["global_prompt"])
               for s in scenes]
  cons = {f: nanmean([p["consistency"][f] for p in per_scene])
          for f in syn.SCENE_FACTORS}
  # Cross-scene controls: every shot against other scenes' shots / prompts.
  cross = {f: [] for f in syn.SCENE_FACTORS}
  g_hit, g_chance = {f: [] for f in GLOBAL_FACTORS}, {
      f: [] for f in GLOBAL_FACTORS}
  s_hit, s_chance = {f: [] for f in syn.SHOT_FACTORS}, {
      f: [] for f in syn.SHOT_FACTORS}
  stated = [parse_global_prompt(s["global_prompt"]) for s in scenes]
  asked = [[parse_shot_prompt(p) for p in s["prompts"]] for s in scenes]
  for a, fa in enumerate(factors):
    for b, fb in enumerate(factors):
      same = a == b
      if not same and a < b:
        for f, v in pair_agreement(fa, fb).items():
          cross[f].append((v, len(fa) * len(fb)))
      for e in fa:
        for f, v in stated[b].items():
          (g_hit if same else g_chance)[f].append(e[f] == v)
      # Shot prompts: shot i against shot i of another scene, where both
      # exist (another scene's prompt for the same slot).
      for i, e in enumerate(fa):
        if i < len(asked[b]):
          for f, v in asked[b][i].items():
            (s_hit if same else s_chance)[f].append(e[f] == v)
  weighted = lambda vs: (float(sum(v * n for v, n in vs) / sum(n for _, n in vs))
                         if vs else float("nan"))
  result = {
      "scenes": len(scenes),
      "shots": len(flat),
      "recognised": _mean([e.recognised for s in scenes
                           for e in s["estimates"]]),
      "consistency": cons,
      "consistency_chance": {f: weighted(cross[f]) for f in cross},
      "global_adherence": {f: _mean(g_hit[f]) for f in GLOBAL_FACTORS},
      "global_adherence_chance": {f: _mean(g_chance[f])
                                  for f in GLOBAL_FACTORS},
      "adherence": {f: _mean(s_hit[f]) for f in syn.SHOT_FACTORS},
      "adherence_chance": {f: _mean(s_chance[f]) for f in syn.SHOT_FACTORS},
      "prior_chance": dict(PRIOR_CHANCE),
  }
  if all("truth" in s for s in scenes):
    truth = [t for s in scenes for t in s["truth"]]
    result["accuracy"] = {f: _mean([e[f] == t[f] for e, t in zip(flat, truth)])
                          for f in ALL_FACTORS}
    result["recognised_by"] = recognised_by_truth(
        [e for s in scenes for e in s["estimates"]], truth)
  return result


def recognised_by_truth(estimates: list[ShotEstimate], truth: list) -> dict:
  """Recognition split by what the generator drew: the sprite's radius (px
  at size 32; radius_level orders size and framing) and whether it moves.
  -> {"radius_px": {r: {"recognised", "shots"}}, "motion": {...}}; groups
  without shots are left out. Says where a model fails (small or moving
  sprites), which the overall fraction hides."""
  groups = {"radius_px": {}, "motion": {}}
  for e, t in zip(estimates, truth):
    level = syn.radius_level(t["size"], t["framing"])
    for kind, key in (("radius_px", f"{syn.RADII[level]:g}"),
                      ("motion", "still" if t["action"] == "still"
                       else "moving")):
      groups[kind].setdefault(key, []).append(e.recognised)
  order = {"radius_px": [f"{r:g}" for r in syn.RADII],
           "motion": ["still", "moving"]}
  return {kind: {k: {"recognised": _mean(groups[kind][k]),
                     "shots": len(groups[kind][k])}
                 for k in order[kind] if k in groups[kind]}
          for kind in groups}
