"""What the network's last layer predicts, turned into the velocity the
rest of the project speaks (training loss, Euler sampler, KV cache).

  velocity  the output is v = eps - z_0 itself (SD3, HunyuanVideo);
  data      the output is a clean-data estimate x_hat, and
            v = (z_t - x_hat) / max(t, t_min),
            exact for z_t = (1 - t) z_0 + t eps when x_hat = z_0.
  data_skip the same, with x_hat = c_skip(t) z_t + c_out(t) out (Karras et
            al. 2022's preconditioning in the rectified-flow schedule, data
            standard deviation s):
              c_skip = (1 - t) s^2 / ((1 - t)^2 s^2 + t^2)
              c_out  = t s / sqrt((1 - t)^2 s^2 + t^2)
            At t = 1 this is "data" with x_hat = s out (the network's output
            keeps unit variance); as t -> 0 x_hat -> z_t,
            so a nearly clean input needs no copying through the network,
            and the velocity loss weights the output error by c_out / t,
            between s and 1 at every t, instead of 1 / t^2.

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

PREDICTIONS = ("velocity", "data", "data_skip")   # `model.prediction`


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
  if m.prediction == "data_skip":
    s2 = jnp.float32(m.prediction_sigma_data) ** 2
    var = jnp.square(1.0 - t) * s2 + jnp.square(t)
    c_skip = (1.0 - t) * s2 / var
    c_out = t * jnp.sqrt(s2) * jax.lax.rsqrt(var)
    out = c_skip * z_t + c_out * out
  return (z_t - out) / jnp.maximum(t, m.prediction_t_min)
