"""Collective bytes of one attention layer (forward + backward) per strategy.

  python benchmarks/context_collectives.py

One `attend` under value_and_grad on a (1, 1, 8, 1) mesh of fake CPU
devices, context_causal, striped scene order. Bytes are read from the
compiled HLO: the result sizes of every all-gather, all-to-all,
collective-permute, all-reduce and reduce-scatter on one device. Next to
them the theoretical minimum in the same units (X = S H D x 4 bytes, one
whole q, k or v; chunk = X / n):
  all_gather: gather K, V once (kept for the backward): 2 X; reduce-scatter
              dK, dV: 2 X / n.                          -> (2 + 2/n) X
  ring:       forward n-1 hops of (K, V) chunks; backward n-1 hops of (K, V)
              and n hops of (dK, dV): (6n - 4) X / n. Inside one jit XLA
              reuses the forward's K/V hops in the backward (CSE), so
              (4n - 2) X / n is what this isolated layer shows; in the
              rematerialised train step the backward re-circulates them.
  ulysses:    8 all_to_alls (q, k, v, o and their cotangents) of one
              device's chunk: 8 X / n.
Of each, a device receives the fraction (n-1)/n. Key-validity masks (bool)
are counted in the measurement, not in the minimum.
"""
import os
import re

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from lct_jax.attention import GroupMask, attend, striping  # noqa: E402
from lct_jax.parallel import make_mesh  # noqa: E402

N = 8
B, H, D = 1, 8, 64
SHAPES = ((4, 1024), (5, 64))        # 4 shots of 1024 tokens, 5 prompts of 64
OPS = ("all-gather", "all-to-all", "collective-permute", "all-reduce",
       "reduce-scatter")
_DT = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "pred": 1, "u32": 4, "s8": 1,
       "u8": 1}


def collective_bytes(hlo: str) -> dict:
  out = {op: 0 for op in OPS}
  for line in hlo.splitlines():
    m = re.match(r"\s*(?:ROOT )?%?[\w.\-]+ = (.+?) (" + "|".join(OPS) +
                 r")(-start)?\(", line)
    if not m:
      continue
    shapes = re.findall(r"(\w+)\[([\d,]*)\]", m.group(1))
    if m.group(3):            # async start: (operand, result) tuple
      shapes = shapes[len(shapes) // 2:]
    for dt, dims in shapes:
      size = int(np.prod([int(d) for d in dims.split(",") if d])) if dims else 1
      out[m.group(2)] += size * _DT.get(dt, 4)
  return out


def minimum(strategy, S):
  x = S * H * D * 4
  return {"all_gather": (2 + 2 / N) * x,
          "ring": (4 * N - 2) * x / N,
          "ulysses": 8 * x / N}[strategy]


def main():
  groups = np.concatenate([np.repeat(np.arange(1, 5), 1024),
                           np.repeat(np.arange(5), 64)])
  ids = striping.striped_ids(groups, SHAPES, N)
  S = len(ids)
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.standard_normal((B, S, H, D)), jnp.float32)
             for _ in range(3))
  mask = GroupMask(ids, ids, jnp.ones((B, S), bool), True)
  mesh = make_mesh(dict(data=1, fsdp=1, context=N, tensor=1))
  print(f"S={S}, H={H}, D={D}, n={N}, float32")
  print("| strategy | all-gather | all-to-all | collective-permute | "
        "all-reduce | reduce-scatter | total MiB | minimum MiB |")
  print("|---|---|---|---|---|---|---|---|")
  for strategy in ("all_gather", "ring", "ulysses"):
    fn = jax.jit(jax.value_and_grad(
        lambda q, k, v, s=strategy: jnp.sum(attend(
            q, k, v, mask, block_q=512, block_kv=512, context_strategy=s)),
        argnums=(0, 1, 2)))
    with jax.set_mesh(mesh):
      hlo = fn.lower(q, k, v).compile().as_text()
    got = collective_bytes(hlo)
    mib = lambda x: f"{x / 2**20:.2f}"
    print(f"| {strategy} | " + " | ".join(mib(got[o]) for o in OPS) +
          f" | {mib(sum(got.values()))} | {mib(minimum(strategy, S))} |",
          flush=True)


if __name__ == "__main__":
  main()
