"""Compiled memory of the tiled VAE at the real HunyuanVideo config.

  python benchmarks/vae_memory.py [--dtypes bfloat16,float32]
                                  [--video 193,480,848] [--all_shapes]
                                  [--compile_for v5p-8]

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

`--compile_for SLICE` (a Cloud TPU name such as v5p-8 or v6e-8, or a
topology such as v5e:2x2; `lct_jax.parallel.topology`) compiles the same
per-tile functions with the TPU compiler from libtpu, on this machine
(no TPU needed, as `train.py --compile_for`), for ONE chip of that slice:
a 1-device mesh of its first device, the parameters replicated and the
tile batch-sharded on it (`NamedSharding`s of abstract
`ShapeDtypeStruct`s), jitted exactly as `sharding.jit_vae(fn, mesh)`
jits a tile. The table then gives the chip's HBM and the share of it the
call needs; a tile that does not fit is reported with the compiler's
RESOURCE_EXHAUSTED figure.
"""
import argparse
import os
import sys
import re
import time

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from lct_jax import parallel
from lct_jax import vae as V
from lct_jax.parallel import topology
from lct_jax.vae import sharding as vae_sharding
from lct_jax.vae.model import AutoencoderKL

GIB = 2 ** 30

_EXHAUSTED = re.compile(r"([\d.]+)([KMGT])\) exceeds available HBM")
_UNITS = dict(K=2 ** 10, M=2 ** 20, G=2 ** 30, T=2 ** 40)


def tpu_tile_compiler(slice_name: str):
  """(tpu_slice, compile(fn, graphdef, state, shape, dtype)) for one chip
  of `slice_name`: a 1-device mesh of the slice's first device, the call
  jitted as `sharding.jit_vae(fn, mesh)` jits it (parameters replicated,
  the tile split on its batch over the project's batch axes) and lowered
  from ShapeDtypeStructs carrying those shardings. `compile` returns the
  compiled function, or the bytes RESOURCE_EXHAUSTED names when the call
  does not fit the chip."""
  tpu_slice = topology.parse_slice(slice_name)
  devices = topology.slice_devices(tpu_slice)
  mesh = parallel.make_mesh(dict.fromkeys(parallel.MESH_AXES, 1),
                            devices[:1])
  replicated = NamedSharding(mesh, P())
  data = vae_sharding.batch_sharding(mesh)

  def compile_tile(fn, graphdef, state, shape, dtype):
    # What jit_vae(fn, mesh)(vae, x) jits (its cached jax.jit).
    jitted = vae_sharding._jitted(fn, mesh, None, ())  # pylint: disable=protected-access
    state = jax.tree.map(lambda a: jax.ShapeDtypeStruct(
        a.shape, a.dtype, sharding=replicated), state)
    x = jax.ShapeDtypeStruct(shape, dtype, sharding=data)
    with jax.set_mesh(mesh):
      try:
        return jitted.lower(graphdef, state, x).compile()
      except Exception as e:  # pylint: disable=broad-except
        m = _EXHAUSTED.search(str(e))
        if "RESOURCE_EXHAUSTED" not in str(e) or m is None:
          raise
        return int(float(m.group(1)) * _UNITS[m.group(2)])

  return tpu_slice, compile_tile


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--dtypes", default="bfloat16,float32")
  p.add_argument("--video", default="193,480,848", help="frames,height,width")
  p.add_argument("--all_shapes", action="store_true",
                 help="compile every distinct tile shape, not the largest")
  p.add_argument("--compile_for", default=None, metavar="SLICE",
                 help="compile for one chip of this TPU slice (v5p-8, "
                 "v6e-8, v5e:2x2, ...) with libtpu, not for the CPU")
  args = p.parse_args()
  tpu_slice = compile_tile = None
  if args.compile_for:
    # Only the TPU compiler is used; the backend stays the CPU (train.py's
    # --compile_for does the same).
    jax.config.update("jax_platforms", "cpu")
    try:
      tpu_slice, compile_tile = tpu_tile_compiler(args.compile_for)
    except (ValueError, RuntimeError) as e:
      sys.exit(f"error: {e}")
  config = V.VAEConfig()
  f, h, w = (int(v) for v in args.video.split(","))
  video_shape = (1, f, h, w, 3)
  plan = V.tile_shapes(config, video_shape)
  target = (f"compiled for one chip of {tpu_slice.describe()} (libtpu "
            f"{topology.check_libtpu()})" if tpu_slice else
            f"{jax.devices()[0].platform}")
  print(f"jax {jax.__version__}, {target}, "
        f"{os.cpu_count()} CPUs; config: block_out_channels "
        f"{list(config.block_out_channels)}, layers_per_block "
        f"{config.layers_per_block}, latent {config.latent_channels}, "
        f"{V.num_params(V.abstract(config)) / 1e6:.1f}M params; video "
        f"{video_shape} -> latents {config.latent_shape(video_shape)}; "
        f"default tiles: encode {sum(n for _, n in plan['encode'])} tile "
        f"calls in {len(plan['encode'])} shapes, decode "
        f"{sum(n for _, n in plan['decode'])} in {len(plan['decode'])}",
        flush=True)
  if tpu_slice:
    hbm = tpu_slice.hbm_bytes
    print(f"| pass | dtype | tile shape | tiles | argument GiB | output GiB | "
          f"temp GiB | total GiB | of HBM ({hbm / GIB:.2f} GiB) | "
          "compile s |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
  else:
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
        if tpu_slice:
          compiled = compile_tile(fn, graphdef, state, shape, dtype)
        else:
          compiled = jitted.lower(graphdef, state, jax.ShapeDtypeStruct(
              shape, dtype)).compile()
        seconds = time.perf_counter() - t0
        if isinstance(compiled, int):  # the TPU compiler: does not fit
          print(f"| {kind} | {dtype_name} | {shape} | {count} | - | - | - | "
                f"{compiled / GIB:.2f} (RESOURCE_EXHAUSTED) | "
                f"{100 * compiled / hbm:.0f}% | {seconds:.0f} |", flush=True)
          continue
        m = compiled.memory_analysis()
        arg, out, tmp = (m.argument_size_in_bytes, m.output_size_in_bytes,
                         m.temp_size_in_bytes)
        row = (f"| {kind} | {dtype_name} | {shape} | {count} | "
               f"{arg / GIB:.2f} | {out / GIB:.3f} | {tmp / GIB:.2f} | "
               f"{(arg + out + tmp) / GIB:.2f} | ")
        if tpu_slice:
          row += f"{100 * (arg + out + tmp) / hbm:.1f}% | "
        print(f"{row}{seconds:.0f} |", flush=True)
  print(f"(load average {os.getloadavg()[0]:.1f})", file=sys.stderr)


if __name__ == "__main__":
  main()
