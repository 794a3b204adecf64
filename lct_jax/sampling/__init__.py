"""Sampling: Euler ODE samplers, joint / causal (KV cache) / bidirectional
auto-regressive generation, and the interactive API (docs/design.md section 9)."""
from lct_jax.sampling.euler import guide, null_text, sample, timesteps
from lct_jax.sampling.sampler import Sampler, Scene, Shot, shot_noise
