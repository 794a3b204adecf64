"""Sampled latents -> video frames through a VAE, for the output files.

The pixel-space demo needs none (`media.to_frames`: its latents are the
pixels). A latent-space model (HunyuanVideo's 16 channels) is decoded by
its VAE (`lct_jax.vae`, loaded by `lct_jax.convert.vae.load_vae`; sample.py
`--vae DIR` or `sample.vae`), with diffusers' tiling so that long, large
shots decode in bounded memory.
"""
from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import numpy as np

from lct_jax import vae as vae_lib

Decoder = Callable[[np.ndarray, int], np.ndarray]   # (latents, frames) -> u8


def vae_decoder(vae: vae_lib.AutoencoderKL, config=None,
                tiling: vae_lib.Tiling | None = vae_lib.Tiling()) -> Decoder:
  """A `Decoder`: latents [f, h, w, C] (the first `num_frames` kept) ->
  uint8 RGB [1 + t (f - 1), H, W, 3]. With the run's `config`, checks now
  that the VAE's latents are the model's (channels)."""
  channels = vae.config.latent_channels
  if config is not None and config.model.in_channels != channels:
    raise ValueError(f"the VAE's latents have {channels} channels but "
                     f"model.in_channels={config.model.in_channels}: not the "
                     "VAE this model was trained with")

  def decode(latents_FxHxWxC: np.ndarray, num_frames: int) -> np.ndarray:
    z = np.asarray(latents_FxHxWxC, np.float32)[:num_frames]
    if z.ndim != 4 or z.shape[-1] != channels:
      raise ValueError(f"latents of shape {z.shape}; the VAE decodes "
                       f"[frames, h, w, {channels}]")
    video = vae_lib.from_latents(vae, jnp.asarray(z)[None], tiling)[0]
    return np.clip(np.round((np.asarray(video, np.float32) + 1.0) * 127.5),
                   0, 255).astype(np.uint8)

  return decode
