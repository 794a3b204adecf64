r"""How well a synthetic-scene model reproduces what it is shown: the error of
its clean-data estimate x_hat(z_t, t) against doing nothing, by t.

  python benchmarks/copy_floor.py --workdir runs/long_lct --scenes 24

Held-out ground truth x (the scenes `python -m lct_jax.evaluate` draws) is
noised to z_t = (1 - t) x + t eps with each shot's own noise, and the model's
x_hat = z_t - t v(z_t, t) (every shot of the scene at the same t, the
guidance-free conditional prediction) is compared with x. The yardstick is
the do-nothing estimate z_t / (1 - t), whose error is the noise it keeps
(t / (1 - t))^2 per value. A denoiser should beat it at every t; one that
loses at small t damages a nearly clean picture instead of keeping it,
whatever its samples look like from pure noise. Errors are mean squares
on the [-1, 1] scale over the shots' real frames, over all pixels and over
sprite pixels (where the truth is more than 0.3 from its frame's median
colour: the sprite, never the background or its texture). Needs t >=
model.prediction_t_min, where x_hat is exact.
"""
import argparse

import jax
import numpy as np
from flax import nnx

from lct_jax import evaluate

SPRITE_DISTANCE = 0.3


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--scenes", type=int, default=24)
  p.add_argument("--t", type=float, nargs="+",
                 default=[0.05, 0.1, 0.2, 0.3, 0.5])
  p.add_argument("--step", type=int, default=None)
  a = p.parse_args()
  config, sampler, step = evaluate.load_sampler(a.workdir, step=a.step)
  t_min = config.model.prediction_t_min
  if config.model.prediction != "velocity" and min(a.t) < t_min:
    raise SystemExit(f"--t must be >= model.prediction_t_min = {t_min}")
  model = nnx.merge(sampler.graphdef, sampler.params)
  N = sampler.geom.max_shots

  @jax.jit
  def x_hat(z, t_BxN, text, text_len, num_frames):
    v = model(z, t_BxN, text, text_len, num_frames)
    return z - t_BxN.reshape(t_BxN.shape + (1,) * (z.ndim - 2)) * v

  drawn_scenes = evaluate.held_out_scenes(config, a.scenes)
  inputs = [(drawn,) + evaluate.held_out_truth(config, sampler, drawn, i)
            for i, drawn in enumerate(drawn_scenes)]

  print(f"{a.workdir} step {step}: {a.scenes} held-out scenes, "
        f"model.prediction = {config.model.prediction}; mean squared error "
        f"on [-1, 1]")
  print("| t | model, all pixels | do nothing, all | model, sprite pixels "
        "| do nothing, sprite | model / do nothing (sprite) |")
  print("|---|---|---|---|---|---|")
  for t in a.t:
    err = {k: [] for k in ("model", "none", "model_sp", "none_sp")}
    for drawn, batch, x, eps in inputs:
      z = (1.0 - t) * x + t * eps
      with sampler.on_mesh():
        xh = np.asarray(x_hat(z, np.full((1, N), t, np.float32),
                              batch["text"], batch["text_len"],
                              batch["num_frames"]))
      for k, shot in enumerate(drawn.shots):
        f = len(shot.frames)
        truth = x[0, k, :f]
        guesses = {"model": xh[0, k, :f], "none": z[0, k, :f] / (1.0 - t)}
        median = np.median(truth.reshape(f, -1, 3), axis=1)[:, None, None]
        sprite = np.linalg.norm(truth - median, axis=-1) > SPRITE_DISTANCE
        for name, guess in guesses.items():
          sq = np.square(guess - truth)
          err[name].append(sq.mean())
          if sprite.any():
            err[name + "_sp"].append(sq[sprite].mean())
    m = {k: float(np.mean(v)) for k, v in err.items()}
    print(f"| {t:.2f} | {m['model']:.5f} | {m['none']:.5f} | "
          f"{m['model_sp']:.5f} | {m['none_sp']:.5f} | "
          f"{m['model_sp'] / m['none_sp']:.2f} |", flush=True)


if __name__ == "__main__":
  main()
