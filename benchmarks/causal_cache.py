"""Causal generation of shot k+1 after k history shots: KV cache vs recompute.

  python benchmarks/causal_cache.py [--model demo|hunyuan] [--max_history 8]
                                    [--repeats 10]

Config: configs/demo.py:causal (a shot is 4 frames of 32x32 pixels = 256
video tokens + 16 text tokens), float32, batch 1, one device, with
  --model demo     width 128, 4 dual-stream blocks, 4 heads of 32, text
                   tokens (the demo);
  --model hunyuan  HunyuanVideo's structure at the demo's width: 2 dual-
                   stream + 4 single-stream blocks, a 1-layer token
                   refiner, given text embeddings (64-d) with pooled
                   vectors (32-d), embedded guidance.
Measured: one velocity evaluation (one Euler step) of the new shot,
  recompute  the model's forward over the whole scene of k+1 shots under
             the context-causal mask (what bidirectional-AR-style
             sampling does);
  cached     the same forward over the new shot's 272 tokens against a
             K/V cache of the k history shots (`sampling.causal
             .shot_forward`; capacity k, all in the pool).
Best of --repeats calls of each, interleaved, after a warm-up (compile
excluded).
Predicted ratio: matmul FLOPs of one step, recompute / cached, per layer
  linear:    24 D^2 per token (Q, K, V, out: 8 D^2; MLP 4x: 16 D^2)
  attention: 4 D per (query, key) pair (QK^T and PV), all S_q x S_k pairs
             (at the demo's 2048-token tiles no tile is masked out whole)
with S = L + (k + 1)(T + L) tokens for recompute and S_q = T + L queries for
the cache; embeddings, norms and RoPE are left out.
"""
import argparse
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lct_jax import batch as batch_lib
from lct_jax import configlib
from lct_jax.model import MMDiT, kv_cache
from lct_jax.sampling import causal

DEMO = str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "demo.py")


def predicted_ratio(config, k: int) -> float:
  m, s = config.model, config.scene
  T = (s.frames // m.patch_t) * (s.height // m.patch) * (s.width // m.patch)
  L, D = s.max_text_len, m.width
  S = L + (k + 1) * (T + L)
  flops = lambda sq, sk: sq * 24 * D * D + 4 * D * sq * sk
  return flops(S, S) / flops(T + L, S)


def timed(fns, repeats):
  """Best-of-`repeats` seconds per fn, calls interleaved: on a shared
  machine the minimum is the least disturbed estimate, and interleaving
  exposes both variants to the same background load."""
  for fn in fns:
    jax.block_until_ready(fn())        # warm-up (and compile)
  best = [float("inf")] * len(fns)
  for _ in range(repeats):
    for i, fn in enumerate(fns):
      t0 = time.perf_counter()
      jax.block_until_ready(fn())
      best[i] = min(best[i], time.perf_counter() - t0)
  return best


def make_config(model: str, k: int):
  c = configlib.load(DEMO + ":causal")
  c.scene.max_shots = k + 1
  c.model.zero_init = False       # random weights: outputs carry signal
  if model == "hunyuan":
    m = c.model
    m.depth, m.num_single_layers, m.num_refiner_layers = 2, 4, 1
    m.text_mode, m.text_embed_dim, m.pooled_dim = "embeddings", 64, 32
    m.guidance_embeds = True
  return c


def measure(model: str, k: int, repeats: int):
  c = make_config(model, k)
  model = MMDiT(c, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  b = batch_lib.random_batch(c, k, 1, min_shots=k + 1)
  b["num_frames"][:] = c.scene.frames
  b["text_len"][:] = c.scene.max_text_len
  pooled = b.get("pooled")
  g = jnp.full((1,), 3.0) if c.model.guidance_embeds else None
  t = jnp.full((1, k + 1), 0.3).at[:, -1].set(0.7)

  full = jax.jit(lambda p, b, t: nnx.merge(graphdef, p)(
      b["latents"], t, b["text"], b["text_len"], b["num_frames"],
      b.get("pooled"), g))
  shot = lambda x, j: None if x is None else x[:, j]

  # The cache of the k history shots (contents do not change the cost).
  def make_cache(p):
    mdl = nnx.merge(graphdef, p)
    cache = kv_cache.init_cache(mdl, b["text"][:, 0], b["text_len"][:, 0],
                                shot(pooled, 0), capacity=k, guidance_B=g)
    for j in range(k):
      _, kv = causal.shot_forward(
          mdl, cache, jnp.ones((1, k), bool), b["latents"][:, j], t[:, j],
          b["text"][:, j + 1], b["text_len"][:, j + 1],
          b["num_frames"][:, j], shot(pooled, j + 1), g, kv_out=True)
      cache = cache.write(j, kv, b["text_len"][:, j + 1],
                          b["num_frames"][:, j])
    return cache
  cache = jax.jit(make_cache)(params)
  step = jax.jit(lambda p, cache, z, t: causal.shot_forward(
      nnx.merge(graphdef, p), cache, jnp.ones((1, k), bool), z, t,
      b["text"][:, k + 1], b["text_len"][:, k + 1], b["num_frames"][:, k],
      shot(pooled, k + 1), g))
  z, t_new = b["latents"][:, k], t[:, k]
  recompute_s, cached_s = timed([lambda: full(params, b, t),
                                 lambda: step(params, cache, z, t_new)],
                                repeats)
  # Same numbers as the recomputation (the contract, here at demo size).
  want = np.asarray(full(params, b, t))[0, k]
  got = np.asarray(step(params, cache, z, t_new))[0]
  err = float(np.abs(got - want).max() / np.abs(want).max())
  return recompute_s, cached_s, predicted_ratio(c, k), err


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--model", choices=("demo", "hunyuan"), default="demo")
  parser.add_argument("--max_history", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=10)
  args = parser.parse_args()
  jax.config.update("jax_default_matmul_precision", "highest")
  import os  # pylint: disable=g-import-not-at-top
  print(f"jax {jax.__version__}, {jax.devices()[0].platform}, "
        f"{len(jax.devices())} device(s), {os.cpu_count()} CPU cores, load "
        f"average {os.getloadavg()[0]:.1f}; --model {args.model}")
  print("| history shots k | tokens (recompute) | recompute (ms) | cached (ms)"
        " | speed-up | predicted (FLOPs) | measured / predicted | rel. err |")
  print("|---|---|---|---|---|---|---|---|")
  for k in range(1, args.max_history + 1):
    r, c, pred, err = measure(args.model, k, args.repeats)
    tokens = 16 + (k + 1) * 272
    print(f"| {k} | {tokens} | {r * 1e3:.1f} | {c * 1e3:.1f} | {r / c:.2f} | "
          f"{pred:.2f} | {r / c / pred:.0%} | {err:.1e} |", flush=True)


if __name__ == "__main__":
  main()
