"""The VAE's API: video <-> latents, as the transformer sees them.

  encode(vae, video)        -> (mean, logvar)  posterior, [B, f, h, w, L]
  decode(vae, z)            -> video           [B, F, H, W, 3], in ~[-1, 1]
  to_latents(vae, video)    -> mean * scaling_factor  (what the transformer
                                                      trains on)
  from_latents(vae, x)      -> decode(x / scaling_factor)
  sample(key, mean, logvar) -> a posterior draw

Videos are float [-1, 1], channels last, F = 1 + 4k frames (an image is
F = 1), H and W multiples of 8 (at the real config; `VAEConfig.check_video`
says which and raises otherwise). Latents are channels last,
f = 1 + (F - 1) / 4, h = H / 8, w = W / 8.

`encode` / `decode` run the whole clip at once and are pure (jit them, or
`jit_vae(encode, mesh)` to split the batch over a mesh). `to_latents` /
`from_latents` jit themselves (cached per shape; `mesh=` splits the batch)
or, with `tiling=Tiling(...)`, take diffusers' tiled, frame-sliced path
(bounded memory, host numpy result; `lct_jax.vae.tiling`). Note diffusers'
`vae.encode` itself slices frames by default (more than 16 frames);
`encode` here never tiles, `tiling=Tiling()` tiles as diffusers does after
`enable_tiling()`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from lct_jax.vae.model import AutoencoderKL, posterior
from lct_jax.vae.sharding import jit_vae
from lct_jax.vae.tiling import Tiling, tiled_decode, tiled_encode


def encode(vae: AutoencoderKL, video_BxFxHxWxC: jax.Array
           ) -> tuple[jax.Array, jax.Array]:
  """(mean, logvar) of the posterior, [B, f, h, w, L] each; logvar clamped
  to [-30, 20] as diffusers' DiagonalGaussianDistribution does."""
  vae.config.check_video(video_BxFxHxWxC.shape)
  return posterior(vae.moments(video_BxFxHxWxC))


def decode(vae: AutoencoderKL, z_BxfxhxwxL: jax.Array) -> jax.Array:
  """Video of (unscaled) latents z; not clipped, as diffusers does not."""
  vae.config.check_latents(z_BxfxhxwxL.shape)
  return vae.decode_raw(z_BxfxhxwxL)


def sample(key: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """mean + exp(logvar / 2) * N(0, 1): a draw from the posterior."""
  noise = jax.random.normal(key, mean.shape, jnp.float32).astype(mean.dtype)
  return mean + jnp.exp(0.5 * logvar) * noise


def _scaled_mean(vae: AutoencoderKL, video: jax.Array) -> jax.Array:
  return encode(vae, video)[0] * vae.config.scaling_factor


def _unscaled_decode(vae: AutoencoderKL, latents: jax.Array) -> jax.Array:
  return decode(vae, latents / vae.config.scaling_factor)


def to_latents(vae: AutoencoderKL, video_BxFxHxWxC, tiling: Tiling | None
               = None, *, mesh=None, batch_axes=None,
               compiler_options: dict | None = None) -> jax.Array:
  """The transformer's latents of a video: posterior mean x scaling_factor.

  Without `tiling`: the whole clip through one jitted call (`jit_vae`,
  batch-split over `mesh` if given; traceable, so also usable under an
  outer jit). With `tiling`: `tiled_encode`, a host numpy array.
  """
  jit_kw = dict(mesh=mesh, batch_axes=batch_axes,
                compiler_options=compiler_options)
  if tiling is not None:
    mean, _ = tiled_encode(vae, video_BxFxHxWxC, tiling, **jit_kw)
    return mean * vae.config.scaling_factor
  return jit_vae(_scaled_mean, **jit_kw)(vae, video_BxFxHxWxC)


def from_latents(vae: AutoencoderKL, latents_BxfxhxwxL, tiling: Tiling |
                 None = None, *, mesh=None, batch_axes=None,
                 compiler_options: dict | None = None) -> jax.Array:
  """The video of the transformer's latents: decode(latents / scaling),
  jitted or tiled as `to_latents`."""
  jit_kw = dict(mesh=mesh, batch_axes=batch_axes,
                compiler_options=compiler_options)
  if tiling is not None:
    return tiled_decode(vae, latents_BxfxhxwxL / vae.config.scaling_factor,
                        tiling, **jit_kw)
  return jit_vae(_unscaled_decode, **jit_kw)(vae, latents_BxfxhxwxL)
