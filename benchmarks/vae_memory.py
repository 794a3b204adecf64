"""Compiled memory of the tiled VAE at the real HunyuanVideo config.

  python benchmarks/vae_memory.py [--dtypes bfloat16,float32]
                                  [--video 193,480,848] [--all_shapes]

The full `AutoencoderKLHunyuanVideo` config (diffusers' defaults:
block_out_channels (128, 256, 512, 512), layers_per_block 2, 16 latent
channels, 32 groups; 246M parameters), no weights needed (abstract
parameters). For a clip of F x H x W (default 193 x 480 x 848, 8 s of
480p at 24 fps), diffusers' default tiles (256 x 256 pixels every 192,
17-frame chunks every 12 frames) give the per-tile calls `tile_shapes`
lists; each distinct shape is one compiled function. For the largest tile
of each direction (or every shape, `--all_shapes`) this compiles the
per-tile function as `tiled_encode` / `tiled_decode` run it
(`sharding.jit_vae` of `AutoencoderKL.moments` / `decode_raw`, batch 1,
parameters and tile in `dtype`) and reports XLA's
`compiled.memory_analysis()`: argument (the parameters the pass uses,
encoder or decoder, + the tile: jit drops the unused ones), output, temp
(scratch), and their sum, the device memory that call needs; the
stitched result lives on the host (`lct_jax.vae.tiling`). The numbers
depend on the tile's shape, not on the clip's length. CPU compiler: its
buffer assignment is not the TPU's or GPU's, so take them as the order of
magnitude; in particular XLA:CPU seems to compute bfloat16 convolutions in
float32, so bfloat16 temp comes out close to float32's here.
"""
import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
from flax import nnx

from lct_jax import vae as V
from lct_jax.vae.model import AutoencoderKL

GIB = 2 ** 30


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--dtypes", default="bfloat16,float32")
  p.add_argument("--video", default="193,480,848", help="frames,height,width")
  p.add_argument("--all_shapes", action="store_true",
                 help="compile every distinct tile shape, not the largest")
  args = p.parse_args()
  config = V.VAEConfig()
  f, h, w = (int(v) for v in args.video.split(","))
  video_shape = (1, f, h, w, 3)
  plan = V.tile_shapes(config, video_shape)
  print(f"jax {jax.__version__}, {jax.devices()[0].platform}, "
        f"{os.cpu_count()} CPUs; config: block_out_channels "
        f"{list(config.block_out_channels)}, layers_per_block "
        f"{config.layers_per_block}, latent {config.latent_channels}, "
        f"{V.num_params(V.abstract(config)) / 1e6:.1f}M params; video "
        f"{video_shape} -> latents {config.latent_shape(video_shape)}; "
        f"default tiles: encode {sum(n for _, n in plan['encode'])} tile "
        f"calls in {len(plan['encode'])} shapes, decode "
        f"{sum(n for _, n in plan['decode'])} in {len(plan['decode'])}",
        flush=True)
  print("| pass | dtype | tile shape | tiles | argument GiB | output GiB | "
        "temp GiB | total GiB | compile s |")
  print("|---|---|---|---:|---:|---:|---:|---:|---:|")
  fns = {"encode": AutoencoderKL.moments, "decode": AutoencoderKL.decode_raw}
  for dtype_name in args.dtypes.split(","):
    dtype = jnp.dtype(dtype_name)
    graphdef, state = nnx.split(V.abstract(config))
    state = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, dtype),
                         state)
    for kind, fn in fns.items():
      # What sharding.jit_vae(fn) jits (without a mesh), lowered abstractly.
      jitted = jax.jit(lambda g, s, x, fn=fn: fn(nnx.merge(g, s), x),
                       static_argnums=0)
      shapes = plan[kind] if args.all_shapes else plan[kind][:1]
      for shape, count in shapes:
        t0 = time.perf_counter()
        compiled = jitted.lower(graphdef, state, jax.ShapeDtypeStruct(
            shape, dtype)).compile()
        seconds = time.perf_counter() - t0
        m = compiled.memory_analysis()
        arg, out, tmp = (m.argument_size_in_bytes, m.output_size_in_bytes,
                         m.temp_size_in_bytes)
        print(f"| {kind} | {dtype_name} | {shape} | {count} | "
              f"{arg / GIB:.2f} | {out / GIB:.3f} | {tmp / GIB:.2f} | "
              f"{(arg + out + tmp) / GIB:.2f} | {seconds:.0f} |", flush=True)
  print(f"(load average {os.getloadavg()[0]:.1f})", file=sys.stderr)


if __name__ == "__main__":
  main()
