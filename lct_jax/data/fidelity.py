"""Shot-by-shot generation judged against its history: fidelity, drift and
quality by shot index, each next to its chance level.

A sequence is a scene generated shot after shot (auto-regressively), where
shot k was conditioned on the earlier shots `pools[k]` (its history). From
the per-shot factor estimates (`estimators`; UNKNOWN never agrees):

  fidelity[f]     per scene factor f, the fraction of (shot k, history shot
                  j in pools[k]) pairs that agree on f, over every shot with
                  a history: does a new shot keep what it was shown?
  drift[k][f]     agreement of shot k with shot 0 on f, per index k >= 1:
                  does the scene stay itself after shot 0 has left the
                  history window?
  recognised[k]   the fraction of shot k's that are recognised: does
                  quality decay as errors accumulate?

Chance levels are the same statistics with the history taken from another
sequence: shot k of sequence a against shots pools_a[k] (fidelity) or
shot 0 (drift) of every other sequence b that has them. Shots of different
held-out scenes share nothing but what the model always draws, so only the
gap above chance is fidelity.
"""
from __future__ import annotations

import numpy as np

from lct_jax.data import synthetic as syn
from lct_jax.data.consistency import agree, nanmean


def _weighted(pairs: list) -> float:
  """Mean of (value, weight) pairs; NaN without any weight."""
  w = sum(n for _, n in pairs)
  return float(sum(v * n for v, n in pairs) / w) if w else float("nan")


def _agreement(factors_a: dict, others: list, f: str) -> tuple[float, int]:
  """(fraction of `others` agreeing with `factors_a` on f, how many)."""
  if not others:
    return 0.0, 0
  return float(np.mean([agree(factors_a[f], o[f]) for o in others])), len(
      others)


def check_sequences(sequences: list[dict]) -> None:
  if not sequences:
    raise ValueError("need at least one sequence")
  for i, s in enumerate(sequences):
    n = len(s["estimates"])
    if len(s["pools"]) != n:
      raise ValueError(f"sequence {i}: {n} shots but {len(s['pools'])} "
                       "history pools")
    for k, pool in enumerate(s["pools"]):
      bad = [j for j in pool if not 0 <= j < k]
      if bad:
        raise ValueError(f"sequence {i}, shot {k}: history {list(pool)} "
                         f"holds {bad}, which are not earlier shots")


def score_sequences(sequences: list[dict]) -> dict:
  """Fidelity, drift and recognition by index over many sequences.

  Args:
    sequences: per sequence, {"estimates": [ShotEstimate] (shot order),
      "pools": [tuple of earlier shot indices] (the history each shot was
      conditioned on; () for the first, or for a given shot)}.
  Returns:
    fidelity[f], fidelity_chance[f], fidelity_mean and its chance (over
    scene factors); drift[k][f], drift_chance[k][f] for k >= 1 (k: 0-based
    shot index) and drift_mean[k] / drift_mean_chance[k]; recognised[k]
    and the number of sequences holding shot k, shots[k].
  """
  check_sequences(sequences)
  factors = [[e.factors for e in s["estimates"]] for s in sequences]
  pools = [s["pools"] for s in sequences]
  n_max = max(len(fs) for fs in factors)
  fid = {f: [] for f in syn.SCENE_FACTORS}
  fid_c = {f: [] for f in syn.SCENE_FACTORS}
  drift = [{f: [] for f in syn.SCENE_FACTORS} for _ in range(n_max)]
  drift_c = [{f: [] for f in syn.SCENE_FACTORS} for _ in range(n_max)]
  for a, fa in enumerate(factors):
    for k, shot in enumerate(fa):
      for f in syn.SCENE_FACTORS:
        fid[f].append(_agreement(shot, [fa[j] for j in pools[a][k]], f))
        if k:
          drift[k][f].append(_agreement(shot, [fa[0]], f))
        for b, fb in enumerate(factors):
          if b == a:
            continue
          fid_c[f].append(_agreement(
              shot, [fb[j] for j in pools[a][k] if j < len(fb)], f))
          if k:
            drift_c[k][f].append(_agreement(shot, [fb[0]], f))
  mean_over = lambda d: nanmean(list(d.values()))
  fidelity = {f: _weighted(fid[f]) for f in fid}
  fidelity_chance = {f: _weighted(fid_c[f]) for f in fid_c}
  drift_k = {k: {f: _weighted(drift[k][f]) for f in syn.SCENE_FACTORS}
             for k in range(1, n_max)}
  drift_chance_k = {k: {f: _weighted(drift_c[k][f])
                        for f in syn.SCENE_FACTORS} for k in range(1, n_max)}
  return {
      "sequences": len(sequences),
      "fidelity": fidelity,
      "fidelity_chance": fidelity_chance,
      "fidelity_mean": mean_over(fidelity),
      "fidelity_mean_chance": mean_over(fidelity_chance),
      "drift": drift_k,
      "drift_chance": drift_chance_k,
      "drift_mean": {k: mean_over(d) for k, d in drift_k.items()},
      "drift_mean_chance": {k: mean_over(d)
                            for k, d in drift_chance_k.items()},
      "recognised": {k: float(np.mean([s["estimates"][k].recognised
                                       for s in sequences
                                       if k < len(s["estimates"])]))
                     for k in range(n_max)},
      "shots": {k: sum(k < len(fs) for fs in factors) for k in range(n_max)},
  }
