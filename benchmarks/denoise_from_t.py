r"""Where in t a synthetic-scene model fails: held-out ground truth noised to
t0, then denoised by the model's own Euler steps from t0 to 0, and judged
by the estimators.

  python benchmarks/denoise_from_t.py --workdir runs/demo_base --scenes 32

At t0 = 0 the output is the ground truth (recognised 1.0); at t0 = 1 it is
an ordinary sample. A model that renders well at high noise but fails at
low noise (where edges and exact colours are decided) shows a drop at
small t0 that no amount of prompt adherence can repair. The Euler grid is
the sampler's (30 steps over [0, 1]), cut at t0; guidance as configured
(--guidance overrides). Prints one row per t0: recognised, the fraction of
shots whose sprite colour / template IoU is within threshold, and the
median sprite colour distance, then the recognised fraction by the
sprite's true radius level (0-1: radius 3-4 px, 2-3: 5-6.5, 4-5: 8-10), to
tell a failure to render small sprites from a failure at every size, and
the fraction whose estimated shape is still the truth's ("shape kept": a
model that cannot draw corners rounds every given shape into a blob).
With --swap_shape the same is run again with the global prompt's shape
word replaced by another shape: "swap: image" is the fraction that still
has the truth's shape, "swap: word" the fraction that has the prompted
one. A model that reads the word moves from the first to the second.
"""
import argparse
import copy
import time

import numpy as np

from lct_jax import evaluate
from lct_jax.data import estimators, synthetic
from lct_jax.sampling import joint as joint_lib
from lct_jax.sampling import media
from lct_jax.sampling.sampler import to_host


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--scenes", type=int, default=32)
  p.add_argument("--t0", type=float, nargs="+",
                 default=[0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0])
  p.add_argument("--steps", type=int, default=30,
                 help="Euler steps over the whole of [0, 1]")
  p.add_argument("--guidance", type=float, default=None)
  p.add_argument("--step", type=int, default=None)
  p.add_argument("--swap_shape", action="store_true",
                 help="also denoise with the shape word swapped")
  p.add_argument("--raw", action="store_true",
                 help="the raw weights instead of the EMA")
  a = p.parse_args()

  config, sampler, step = evaluate.load_sampler(
      a.workdir, steps=a.steps, guidance=a.guidance, use_ema=not a.raw,
      step=a.step)
  graphdef = sampler.graphdef
  drawn_scenes = evaluate.held_out_scenes(config, a.scenes)
  fn = joint_lib.jitted(graphdef)
  full_ts = np.linspace(1.0, 0.0, a.steps + 1, dtype=np.float32)
  print(f"{a.workdir} step {step}: {a.scenes} held-out scenes, {a.steps}-step "
        f"grid cut at t0, guidance {sampler.cfg_scale}, "
        f"{'raw' if a.raw else 'EMA'} weights")
  print(f"{'t0':>5s} {'steps':>5s} {'recognised':>10s} {'sprite col.':>11s} "
        f"{'IoU':>5s} {'median dist.':>12s} {'s':>5s} "
        f"{'rec. r 3-4':>10s} {'r 5-6.5':>7s} {'r 8-10':>6s} "
        f"{'shape kept':>10s}"
        + (f" {'swap: image':>11s} {'swap: word':>10s}" if a.swap_shape
           else ""))
  true_shapes = [s.factors["shape"] for drawn in drawn_scenes
                 for s in drawn.shots]
  levels = [synthetic.radius_level(s.factors["size"], s.factors["framing"])
            for drawn in drawn_scenes
            for s in drawn.shots]
  level_pair = np.asarray(levels) // 2
  def denoise(drawn, i, t0, ts):
    """Estimates of the scene's shots denoised from its truth at t0."""
    batch, x, eps = evaluate.held_out_truth(config, sampler, drawn, i)
    N = sampler.geom.max_shots
    z_t0 = (1.0 - t0) * x + t0 * eps
    out = z_t0
    if ts.size > 1:
      with sampler.on_mesh():
        out = to_host(fn(sampler.params, batch, np.zeros((1, N), bool),
                         np.zeros((1, N), np.float32), z_t0,
                         np.zeros_like(z_t0), ts, sampler.cfg_scale,
                         sampler.guidance_B, use_cfg=sampler.use_cfg))
    return [estimators.estimate_shot(media.to_frames(out[0, k],
                                                     len(s.frames)))
            for k, s in enumerate(drawn.shots)]

  def swapped(drawn, i):
    """The scene with its global prompt's shape word replaced, and the
    shape it now names (cycling through the other three)."""
    true = drawn.shots[0].factors["shape"]
    shapes = synthetic.SHAPES
    other = shapes[(shapes.index(true) + 1 + i % 3) % len(shapes)]
    d = copy.copy(drawn)
    d.global_prompt = drawn.global_prompt.replace(f" {true} ", f" {other} ")
    assert d.global_prompt != drawn.global_prompt, drawn.global_prompt
    return d, other

  for t0 in a.t0:
    ts = np.concatenate([[t0], full_ts[full_ts < t0]]).astype(np.float32)
    start = time.perf_counter()
    estimates, swap_image, swap_word = [], [], []
    for i, drawn in enumerate(drawn_scenes):
      estimates += denoise(drawn, i, t0, ts)
      if a.swap_shape:
        d, other = swapped(drawn, i)
        shapes_out = [e.factors["shape"] for e in denoise(d, i, t0, ts)]
        swap_image += [e == s.factors["shape"]
                       for e, s in zip(shapes_out, drawn.shots)]
        swap_word += [e == other for e in shapes_out]
    ev = estimators.evidence_summary(estimates)
    recognised = np.asarray([e.recognised for e in estimates], float)
    rec = recognised.mean()
    kept = np.mean([e.factors["shape"] == shape
                    for e, shape in zip(estimates, true_shapes)])
    by_size = [recognised[level_pair == k].mean() if (level_pair == k).any()
               else float("nan") for k in range(3)]
    print(f"{t0:5.2f} {ts.size - 1:5d} {rec:10.3f} "
          f"{ev['sprite_distance']['within']:11.3f} "
          f"{ev['template_iou']['within']:5.3f} "
          f"{ev['sprite_distance']['median']:12.1f} "
          f"{time.perf_counter() - start:5.1f} "
          f"{by_size[0]:10.3f} {by_size[1]:7.3f} {by_size[2]:6.3f} "
          f"{kept:10.3f}"
          + (f" {np.mean(swap_image):11.3f} {np.mean(swap_word):10.3f}"
             if a.swap_shape else ""),
          flush=True)


if __name__ == "__main__":
  main()
