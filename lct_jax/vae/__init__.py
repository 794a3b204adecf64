"""The HunyuanVideo causal 3D VAE (diffusers' `AutoencoderKLHunyuanVideo`)
in Flax NNX, channels last: video [B, F, H, W, 3] in [-1, 1] <-> latents
[B, 1 + (F - 1) / 4, H / 8, W / 8, 16].

  encode(vae, video) -> (mean, logvar)      decode(vae, z) -> video
  to_latents(vae, video[, tiling, mesh])    mean * scaling_factor
  from_latents(vae, latents[, tiling, mesh])
  tiled_encode / tiled_decode(vae, x, Tiling(...), mesh=)   diffusers' tiling
  jit_vae(fn, mesh)                         batch-sharded jit of fn(vae, x)
  VAEConfig.from_diffusers(config.json dict)
  import_state_dict / export_state_dict     diffusers weights <-> params
  checkpoint.load(dir)                      a converted checkpoint
Loading a diffusers folder or either kind of directory: `lct_jax.convert.vae.
load_vae` (the converter's layer); CLI `python -m lct_jax.convert vae ...`.
"""
from lct_jax.vae import checkpoint
from lct_jax.vae.codec import decode, encode, from_latents, sample, to_latents
from lct_jax.vae.config import VAEConfig
from lct_jax.vae.convert import (export_state_dict, import_state_dict, init,
                                 model_from_params, params_of)
from lct_jax.vae.model import (AutoencoderKL, abstract, cast, init_params,
                               num_params)
from lct_jax.vae.sharding import batch_sharding, bind, jit_vae
from lct_jax.vae.tiling import Tiling, tile_shapes, tiled_decode, tiled_encode
