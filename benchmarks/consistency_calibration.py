"""Calibration of the synthetic metric's recognition thresholds.

  python benchmarks/consistency_calibration.py [--scenes 300]

Config: synthetic scenes (lct_jax.data.synthetic) at 32x32, up to 4 shots
of up to 4 frames, seeds 0..N-1. For ground truth (clean, and under
Gaussian pixel noise sigma 8 and 12 on 0..255, and with soft edges: a
Gaussian blur of 0.5 and 0.7 px) and for each kind of garbage
(lct_jax.data.counterfeits), prints the fraction of shots recognised, the
fraction with every factor right, and each piece of evidence's min / p50 /
p99 / max, next to the thresholds (lct_jax.data.estimators.Thresholds).
"""
import argparse
import collections

import numpy as np

from lct_jax.data import counterfeits as cf
from lct_jax.data import estimators as est
from lct_jax.data import synthetic as syn


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--scenes", type=int, default=300)
  a = p.parse_args()
  rng = np.random.default_rng(0)
  scenes = [syn.generate_scene(s, max_shots=4, max_frames=4)
            for s in range(a.scenes)]
  th = est.DEFAULT_THRESHOLDS
  print(f"thresholds: {th}")
  kinds = {"clean": lambda f: f,
           "sigma 8": lambda f: cf.pixel_noise(rng, f, 8.0),
           "sigma 12": lambda f: cf.pixel_noise(rng, f, 12.0),
           "blur 0.5 px": lambda f: cf.soft_edges(f, 0.5),
           "blur 0.5 px + sigma 8": lambda f: cf.pixel_noise(
               rng, cf.soft_edges(f, 0.5), 8.0),
           "blur 0.7 px": lambda f: cf.soft_edges(f, 0.7)}
  kinds.update({k: (lambda f, fn=fn: fn(rng, f))
                for k, fn in cf.GARBAGE.items()})
  header = " | ".join(f"{k} (min / p50 / p99 / max)" for k in EVIDENCE)
  print(f"| input | shots | recognised | all factors right | {header} |")
  print("|---" * (4 + len(EVIDENCE)) + "|")
  for name, fn in kinds.items():
    ev, rec, right, n = collections.defaultdict(list), 0, 0, 0
    for scene in scenes:
      for shot in scene.shots:
        e = est.estimate_shot(fn(shot.frames))
        n += 1
        rec += e.recognised
        right += all(e.factors[k] == shot.factors[k] for k in est.ALL_FACTORS)
        for k, v in e.evidence.items():
          ev[k].append(v)
    cells = []
    for k in EVIDENCE:
      v = np.asarray(ev[k], float)
      v = v[~np.isnan(v)]
      cells.append("-" if not len(v) else
                   f"{v.min():.2f} / {np.median(v):.2f} / "
                   f"{np.percentile(v, 99):.2f} / {v.max():.2f}")
    print(f"| {name} | {n} | {rec / n:.3f} | {right / n:.3f} | "
          + " | ".join(cells) + " |", flush=True)


EVIDENCE = ("background_residual", "background_distance", "sprite_distance",
            "template_iou", "track_error")

if __name__ == "__main__":
  main()
