"""VAE encode / decode time on CPU, float32: the Flax port (jitted) vs
diffusers' `AutoencoderKLHunyuanVideo`.

  python benchmarks/vae_speed.py [--runs 5] [--frames 17 --size 64]

Needs the `parity` extra (torch 2.13.0 CPU, diffusers). Same weights
(diffusers' init, converted), same random video, one process. Config: the
real layout (4 blocks, 8x space / 4x time, 2 resnets per block, 16 latent
channels, 32 groups) at a quarter of the width, block_out_channels
(32, 64, 64, 64); a 17 x 64 x 64 video -> 5 x 8 x 8 latents, batch 1.
Both sides untiled (diffusers' frame slicing off, which would otherwise
encode 17 frames as two chunks): decode is of diffusers' posterior mean.
The first call of each is the warm-up (JAX's compile excluded), then
`runs` rounds each timing the four calls once, so that passing load from
other work hits all alike. Reported: median / min seconds.
"""
import argparse
import os
import statistics
import time

import jax
import numpy as np
import torch
from diffusers import AutoencoderKLHunyuanVideo

from lct_jax import vae as V

jax.config.update("jax_default_matmul_precision", "highest")   # = torch f32

DCONF = dict(block_out_channels=[32, 64, 64, 64], layers_per_block=2,
             latent_channels=16, norm_num_groups=32,
             down_block_types=["HunyuanVideoDownBlock3D"] * 4,
             up_block_types=["HunyuanVideoUpBlock3D"] * 4)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--runs", type=int, default=5)
  p.add_argument("--frames", type=int, default=17)
  p.add_argument("--size", type=int, default=64)
  args = p.parse_args()
  torch.manual_seed(0)
  model = AutoencoderKLHunyuanVideo(**DCONF).eval()
  model.use_framewise_encoding = model.use_framewise_decoding = False
  config = V.VAEConfig.from_diffusers(DCONF)
  sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  vae = V.model_from_params(config, V.import_state_dict(sd, config))
  shape = (1, args.frames, args.size, args.size, 3)
  video = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
  video_t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(video, -1, 1)))

  with torch.no_grad():
    mean_t = model.encode(video_t).latent_dist.mean
  mean = np.ascontiguousarray(np.moveaxis(mean_t.numpy(), 1, -1))
  enc, dec = jax.jit(V.encode), jax.jit(V.decode)
  t0 = time.perf_counter()
  jax.block_until_ready(enc(vae, video))
  compile_enc = time.perf_counter() - t0
  t0 = time.perf_counter()
  out = jax.block_until_ready(dec(vae, mean))
  compile_dec = time.perf_counter() - t0
  with torch.no_grad():
    ref = model.decode(mean_t).sample.numpy()
  err_dec = float(np.max(np.abs(np.moveaxis(np.asarray(out), -1, 1) - ref)))
  err_enc = float(np.max(np.abs(np.asarray(enc(vae, video)[0]) - mean)))

  def torch_enc():
    with torch.no_grad():
      model.encode(video_t)

  def torch_dec():
    with torch.no_grad():
      model.decode(mean_t)

  fns = {"torch encode": torch_enc,
         "jax encode": lambda: jax.block_until_ready(enc(vae, video)),
         "torch decode": torch_dec,
         "jax decode": lambda: jax.block_until_ready(dec(vae, mean))}
  times = {k: [] for k in fns}
  for _ in range(args.runs):
    for k, fn in fns.items():         # interleaved: load hits all alike
      t0 = time.perf_counter()
      fn()
      times[k].append(time.perf_counter() - t0)
  med = {k: statistics.median(v) for k, v in times.items()}
  low = {k: min(v) for k, v in times.items()}

  print(f"jax {jax.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), float32, CPU "
        f"({os.cpu_count()} cores), load average {os.getloadavg()[0]:.1f}")
  print(f"config: block_out_channels {DCONF['block_out_channels']}, "
        f"layers_per_block 2, latent 16, {V.num_params(vae) / 1e6:.1f}M "
        f"params; video {shape} -> latents {config.latent_shape(shape)}; "
        f"untiled; JAX compile: encode {compile_enc:.1f}s, decode "
        f"{compile_dec:.1f}s")
  print("| pass | torch (s) | jax (s) | jax / torch | max abs diff |")
  print("|---|---:|---:|---:|---:|")
  for name, err in (("encode", err_enc), ("decode", err_dec)):
    t, j = f"torch {name}", f"jax {name}"
    print(f"| {name} | {med[t]:.3f} / {low[t]:.3f} | {med[j]:.3f} / "
          f"{low[j]:.3f} | {med[j] / med[t]:.2f} / {low[j] / low[t]:.2f} | "
          f"{err:.1e} |")
  print(f"(median / min of {args.runs} runs; load average now "
        f"{os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
  main()
