"""Forward time on CPU, float32: the Flax model (jitted) vs diffusers' model.

  python benchmarks/parity_speed.py [--quick]

Needs the `parity` extra (torch 2.13.0 CPU, diffusers). Same weights (random,
converted), same single-shot input, one process, the two frameworks timed
alternately so that passing load hits both alike. Configs:
  tiny    the parity test's largest case (width 48, 2 dual + 1 single blocks,
          1 refiner block, guidance, 8 video + 7 text tokens), batch 2
  medium  width 512 (4 heads of 128, RoPE bands 16/56/56), 8 dual blocks,
          1 refiner block, guidance; 4 x 64 x 64 latents, patch 1x2x2 ->
          4096 video tokens + 64 text tokens (60 real), batch 1
The first (parity-checking) call of each is the warm-up (compile excluded);
then `runs` rounds, each timing JAX blockwise, JAX dense and torch once, so
that passing load from other work hits all three alike. Reported: median /
min over the rounds. JAX kernels: `blockwise` (the default, 512 tiles) and
`dense`.
`--quick` runs only the tiny config.
"""
import os
import statistics
import sys
import time

import jax
import numpy as np
import torch

from lct_jax.convert import hunyuan, parity

jax.config.update("jax_default_matmul_precision", "highest")   # = torch f32

CONFIGS = {
    "tiny": dict(
        dconf=dict(num_attention_heads=3, num_layers=2, num_single_layers=1,
                   num_refiner_layers=1, guidance_embeds=True,
                   patch_size_t=2, out_channels=6, rope_axes_dim=[4, 4, 8],
                   mlp_ratio=3.0, text_embed_dim=20, pooled_projection_dim=8),
        fhw=(4, 4, 4), text_len=7, text_lens=[7, 1], runs=30),
    "medium": dict(
        dconf=dict(in_channels=16, out_channels=16, num_attention_heads=4,
                   attention_head_dim=128, num_layers=8, num_single_layers=0,
                   num_refiner_layers=1, mlp_ratio=4.0,
                   guidance_embeds=True, text_embed_dim=256,
                   pooled_projection_dim=64, rope_axes_dim=[16, 56, 56]),
        fhw=(4, 64, 64), text_len=64, text_lens=[60], runs=5),
}


def bench(name, spec):
  """-> (description, {variant: [seconds per run]}, max abs diff)."""
  dconf = parity.tiny_diffusers_config(**spec["dconf"])
  f, h, w = spec["fhw"]
  torch_model = parity.random_diffusers_model(dconf, 0)
  sd = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
  fns, err = {}, 0.0
  for impl in ("blockwise", "dense"):
    config = parity.degenerate_config(dconf, frames=f, height=h, width=w,
                                      text_len=spec["text_len"],
                                      attention_impl=impl)
    params = hunyuan.import_state_dict(sd, config)
    inputs = parity.random_inputs(config, spec["text_lens"], 1)
    fwd = parity.flax_forward_fn(config, params)
    jax_inputs = jax.tree.map(jax.numpy.asarray, inputs)
    ref = parity.diffusers_forward(torch_model, inputs, config)
    err = max(err, float(np.max(np.abs(np.asarray(fwd(jax_inputs)) - ref))))
    fns[f"jax {impl}"] = (lambda fwd=fwd, x=jax_inputs:
                          jax.block_until_ready(fwd(x)))
  fns["torch"] = lambda: parity.diffusers_forward(torch_model, inputs, config)
  times = {k: [] for k in fns}
  for _ in range(spec["runs"]):
    for k, fn in fns.items():          # interleaved: load hits all alike
      t0 = time.perf_counter()
      fn()
      times[k].append(time.perf_counter() - t0)
  m = config.model
  tokens = (f // m.patch_t) * (h // m.patch) * (w // m.patch)
  desc = (f"width {m.width}, {m.depth} dual + {m.num_single_layers} single "
          f"+ {m.num_refiner_layers} refiner, {tokens}+{spec['text_len']} "
          f"tokens, batch {len(spec['text_lens'])}")
  return desc, times, err


def main():
  names = ["tiny"] if "--quick" in sys.argv else list(CONFIGS)
  print(f"jax {jax.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), float32, CPU, load average "
        f"{os.getloadavg()[0]:.1f}")
  print("| config | shape | torch (s) | jax blockwise (s) | jax dense (s) "
        "| blockwise / torch | dense / torch | max abs diff |")
  print("|---|---|---:|---:|---:|---:|---:|---:|")
  for name in names:
    desc, times, err = bench(name, CONFIGS[name])
    med = {k: statistics.median(v) for k, v in times.items()}
    low = {k: min(v) for k, v in times.items()}
    cell = lambda k: f"{med[k]:.4f} / {low[k]:.4f}"
    ratio = lambda k: (f"{med[k] / med['torch']:.2f} / "
                       f"{low[k] / low['torch']:.2f}")
    print(f"| {name} | {desc} | {cell('torch')} | {cell('jax blockwise')} | "
          f"{cell('jax dense')} | {ratio('jax blockwise')} | "
          f"{ratio('jax dense')} | {err:.1e} |", flush=True)
  print(f"(median / min of the runs; load average now "
        f"{os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
  main()
