"""Blockwise vs dense attention on CPU: scratch memory, time, causal savings.

Run:  python benchmarks/attention_memory.py  [--seq_lens 4096,8192 ...]

Part 1, for each sequence length: peak temporary memory of the jitted
forward+backward (XLA's compile-time `memory_analysis().temp_size_in_bytes`,
deterministic) and its wall time (median of a few runs after a warm-up), for
the dense reference and the blockwise kernel under the bidirectional mask.
Dense is compiled at every length (memory needs no run) but only run while
its scratch stays under a cap.

Part 2: blockwise context_causal time as a fraction of bidirectional for N
equal shots, next to the ideal (N+1)/(2N) (the block lower triangle); the
two are timed interleaved so that passing load affects both alike.
"""
import argparse
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from lct_jax import attention

GIB = 1024 ** 3


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seq_lens", default="4096,8192,16384,32768")
  parser.add_argument("--heads", type=int, default=2)
  parser.add_argument("--head_dim", type=int, default=64)
  parser.add_argument("--block", type=int, default=512,
                      help="block_q = block_kv of the blockwise kernel")
  parser.add_argument("--dense_cap_gib", type=float, default=4.0,
                      help="run dense only below this much scratch")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--causal_repeats", type=int, default=5)
  parser.add_argument("--causal_seq_len", type=int, default=16384)
  parser.add_argument("--shots", default="4,8")
  return parser.parse_args()


def fwd_bwd(impl: str, mask: attention.GroupMask, block: int):
  """jit(grad) of a scalar loss over attention: one forward and one backward."""
  def loss(q, k, v):
    o = attention.attend(q, k, v, mask, impl=impl, block_q=block,
                         block_kv=block)
    return jnp.sum(o * o)
  return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def compile_and_measure(fn, args, run: bool, repeats: int):
  """(temp bytes, (median, min) seconds or None)."""
  compiled = fn.lower(*args).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  if not run:
    return temp, None
  return temp, median_times([compiled], args, repeats)[0]


def median_times(compiled_fns, args, repeats: int):
  """(median, min) wall time of each function, runs interleaved round-robin.

  Interleaving makes a ratio between the functions robust to load that comes
  and goes on a shared machine; the min is the least disturbed run.
  """
  for fn in compiled_fns:
    jax.block_until_ready(fn(*args))  # Warm-up.
  times = [[] for _ in compiled_fns]
  for _ in range(repeats):
    for fn, fn_times in zip(compiled_fns, times):
      start = time.perf_counter()
      jax.block_until_ready(fn(*args))
      fn_times.append(time.perf_counter() - start)
  return [(statistics.median(t), min(t)) for t in times]


def fmt(median_min) -> str:
  return "%.2f s / %.2f s" % median_min


def inputs(seq_len: int, heads: int, head_dim: int):
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  shape = (1, seq_len, heads, head_dim)
  return [jax.random.normal(key, shape, jnp.float32) for key in keys]


def shot_mask(seq_len: int, shots: int, causal: bool) -> attention.GroupMask:
  """Shots 1..N of equal length, all keys valid."""
  groups = np.repeat(np.arange(1, shots + 1), seq_len // shots)
  return attention.GroupMask(groups, groups, np.ones((1, seq_len), bool),
                             causal)


def memory_table(args, seq_lens):
  print("\n| seq len | dense temp | blockwise temp | dense ratio | "
        "dense time (median / min) | blockwise time (median / min) |")
  print("|---:|---:|---:|---:|---:|---:|")
  for seq_len in seq_lens:
    qkv = inputs(seq_len, args.heads, args.head_dim)
    mask = shot_mask(seq_len, 1, causal=False)
    # Compile dense first without running, to decide against the cap.
    dense_temp, _ = compile_and_measure(fwd_bwd("dense", mask, args.block),
                                        qkv, run=False, repeats=0)
    run_dense = dense_temp <= args.dense_cap_gib * GIB
    if run_dense:
      _, dense_time = compile_and_measure(fwd_bwd("dense", mask, args.block),
                                          qkv, True, args.repeats)
      dense_time = fmt(dense_time)
    else:
      dense_time = f"skipped (> {args.dense_cap_gib:g} GiB)"
    block_temp, block_time = compile_and_measure(
        fwd_bwd("blockwise", mask, args.block), qkv, True, args.repeats)
    print(f"| {seq_len} | {dense_temp / 2**20:,.0f} MiB | "
          f"{block_temp / 2**20:,.1f} MiB | {dense_temp / block_temp:,.0f}x | "
          f"{dense_time} | {fmt(block_time)} |", flush=True)


def causal_table(args):
  seq_len = args.causal_seq_len
  qkv = inputs(seq_len, args.heads, args.head_dim)
  print(f"\nblockwise fwd+bwd at {seq_len} tokens, N equal shots (groups "
        "1..N, no padding):\n")
  print("| shots N | bidirectional (median / min) | context_causal "
        "(median / min) | fraction of medians | fraction of mins | "
        "ideal (N+1)/(2N) | tile pairs causal/full |")
  print("|---:|---:|---:|---:|---:|---:|---:|")
  for shots in (int(s) for s in args.shots.split(",")):
    compiled, pairs = [], {}
    for causal in (False, True):
      mask = shot_mask(seq_len, shots, causal)
      compiled.append(fwd_bwd("blockwise", mask, args.block).lower(
          *qkv).compile())
      pairs[causal] = len(attention.tile_schedule(
          mask.q_group, mask.kv_group, args.block, args.block, causal))
    times = dict(zip((False, True), median_times(compiled, qkv,
                                                 args.causal_repeats)))
    print(f"| {shots} | {fmt(times[False])} | {fmt(times[True])} | "
          f"{times[True][0] / times[False][0]:.3f} | "
          f"{times[True][1] / times[False][1]:.3f} | "
          f"{(shots + 1) / (2 * shots):.3f} | "
          f"{pairs[True]}/{pairs[False]} |", flush=True)


def main():
  args = parse_args()
  seq_lens = [int(s) for s in args.seq_lens.split(",")]
  print(f"machine: {os.cpu_count()}-core {jax.default_backend()} "
        f"({jax.device_count()} device), CPython "
        f"{platform.python_version()}, jax {jax.__version__}")
  print(f"config: batch 1, {args.heads} heads x head_dim {args.head_dim}, "
        f"float32, block_q = block_kv = {args.block}, jitted forward+backward "
        f"(grad w.r.t. q, k, v); part 1: one group, all keys valid, "
        f"bidirectional; time = median and min of {args.repeats} runs "
        f"({args.causal_repeats} in part 2) after a warm-up; dense run only "
        f"below {args.dense_cap_gib:g} GiB of scratch")
  # Timings on a shared machine mean little without the load beside them.
  print("load average (1 min) at start: %.2f" % os.getloadavg()[0])
  start = time.perf_counter()
  memory_table(args, seq_lens)
  causal_table(args)
  print(f"\ntotal wall time {time.perf_counter() - start:.0f} s, load average "
        f"(1 min) at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
  main()
