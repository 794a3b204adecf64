"""What the network's last layer predicts, turned into the velocity the
rest of the project speaks (training loss, Euler sampler, KV cache).

  velocity  the output is v = eps - z_0 itself (SD3, HunyuanVideo);
  data      the output is a clean-data estimate x_hat, and
            v = (z_t - x_hat) / max(t, t_min),
            exact for z_t = (1 - t) z_0 + t eps when x_hat = z_0.

Why "data" exists: a pixel-space model predicting v must reproduce the
input noise eps token by token; a clean image is far simpler to output
(Li & He 2025, "Back to Basics: Let Denoising Generative Models Denoise").
On the CPU demo it did not by itself fix the 4x4-patch-noise samples in
600 steps (BENCHMARKS.md, "Demo generation").
The loss stays in velocity space, so it weights the data error by 1 / t^2,
clipped at t_min to keep low-noise shots from dominating. A parameter-free
change of output: converted checkpoints (velocity) are unaffected.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

PREDICTIONS = ("velocity", "data")   # `model.prediction`


def to_velocity(out: jax.Array, z_t: jax.Array, t: jax.Array, m) -> jax.Array:
  """Network output -> velocity, float32, like `out`.

  Args:
    out: the network output, [B, (N,) F, H, W, C].
    z_t: the noisy input latents, same shape.
    t: per-shot timesteps, [B] or [B, N] (broadcast over the rest).
    m: the model config (`prediction`, `prediction_t_min`).
  """
  out = out.astype(jnp.float32)
  if m.prediction == "velocity":     # configlib.validate checks the name
    return out
  t = jnp.asarray(t, jnp.float32)
  t = t.reshape(t.shape + (1,) * (out.ndim - t.ndim))
  z_t = z_t.astype(jnp.float32)
  return (z_t - out) / jnp.maximum(t, m.prediction_t_min)
