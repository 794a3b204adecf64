"""Per-device memory of causal sampling with the KV cache as context grows.

  python benchmarks/cache_memory.py

Config: configs/demo.py:causal with scene.max_shots = 9 (a cache of 8
history shots), pinned to 4-frame shots at patch 4 x patch_t 1 (a shot is
256 video + 16 text tokens, whatever the demo's own geometry); width 128, 4 dual
blocks, 4 heads of 32), float32, batch 1, no CFG; mesh (data 1, fsdp 1,
context n, tensor 1) over n of 8 fake CPU devices. The cache is built on
the mesh (`Sampler.new_cache`), so its shardings are the ones sampling
uses. Measured:
  cache MiB / device   bytes of the cache's shards on one device;
  step temp MiB        XLA's memory_analysis() temp of one compiled
                       velocity evaluation of a new shot against the full
                       cache (`sampling.causal.shot_forward`), per device.
Parameters are replicated at fsdp 1, so they do not shrink and are left out.
"""
import os
import pathlib
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from lct_jax import configlib  # noqa: E402
from lct_jax.model import MMDiT  # noqa: E402
from lct_jax.parallel import make_mesh  # noqa: E402
from lct_jax.sampling import Sampler, Scene, causal  # noqa: E402

DEMO = str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "demo.py")
RUNS = [("ring", 1), ("ring", 2), ("ring", 4), ("ring", 8),
        ("all_gather", 8), ("ulysses", 4)]


def measure(strategy: str, n: int):
  c = configlib.load(DEMO + ":causal")
  c.scene.max_shots = 9
  c.scene.frames, c.model.patch_t, c.model.patch = 4, 1, 4   # 256 tokens
  c.model.context_strategy = strategy
  graphdef, params = nnx.split(MMDiT(c, rngs=nnx.Rngs(0)), nnx.Param)
  params = nnx.to_pure_dict(params)
  mesh = make_mesh(dict(data=1, fsdp=1, context=n, tensor=1),
                   jax.devices()[:n])
  sampler = Sampler(c, graphdef, params, steps=1, mesh=mesh)
  L = c.scene.max_text_len
  cache = sampler.new_cache(Scene(np.ones(L, np.int32), L, []))
  cache_bytes = sum(x.addressable_shards[0].data.nbytes
                    for x in jax.tree.leaves(cache))
  shape = (1,) + sampler.shot_shape
  fn = jax.jit(lambda p, cache, z: causal.shot_forward(
      nnx.merge(graphdef, p), cache, jnp.ones((1, cache.capacity), bool), z,
      jnp.full((1,), 0.5), jnp.ones((1, L), jnp.int32),
      jnp.full((1,), L, jnp.int32), jnp.full((1,), shape[1], jnp.int32),
      None, None))
  with jax.set_mesh(mesh):
    mem = fn.lower(sampler.params, cache,
                   np.zeros(shape, np.float32)).compile().memory_analysis()
  return cache_bytes, mem.temp_size_in_bytes


def main():
  print(f"jax {jax.__version__}, {os.cpu_count()} CPUs", file=sys.stderr)
  print("| strategy | context n | cache MiB / device | x of n=1 | step temp "
        "MiB / device | x of n=1 |")
  print("|---|---|---|---|---|---|")
  base = None
  for strategy, n in RUNS:
    cache, temp = measure(strategy, n)
    base = base or (cache, temp)
    print(f"| {strategy} | {n} | {cache / 2**20:.2f} | "
          f"{cache / base[0]:.3f} | {temp / 2**20:.2f} | "
          f"{temp / base[1]:.3f} |", flush=True)


if __name__ == "__main__":
  main()
