"""Context-causal attention's cost against bidirectional, as compiled.

The kernels skip what the mask excludes by static schedules fixed at trace
time, so their work is read off those schedules: the blockwise kernel's
tile plan (`attention.plan`) and splash's block mask (`process_mask`, the
blocks its grid visits). Per device under a context axis of 8, with the
model's striped token order (each device a slice of every shot and prompt),
for the scene geometry of configs/lct_3b.py. Shot k of N attends shots
<= k, so the ideal ratio is (N+1)/(2N) for the video tokens; the prompts
and the global group move it a little.

  python benchmarks/causal_cost.py
"""
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from lct_jax import configlib  # pylint: disable=wrong-import-position
from lct_jax.attention import GroupMask, accel, plan as plan_lib, striping  # pylint: disable=wrong-import-position
from lct_jax.layout import SceneGeometry  # pylint: disable=wrong-import-position

CONFIG = str(pathlib.Path(__file__).resolve().parents[1] / "configs" /
             "lct_3b.py")
CONTEXT, BLOCK = 8, 512


def device_ids(shots: int):
  """(device 0's query ids, all key ids) in the striped order."""
  c = configlib.load(CONFIG)
  c.scene.max_shots = shots
  g = SceneGeometry.from_config(c)
  shapes = ((g.num_video_slots, g.tokens_per_slot),
            (g.num_groups, g.max_text_len))
  ids = striping.striped_ids(g.token_groups(), shapes, CONTEXT)
  return ids.reshape(CONTEXT, -1)[0], ids


def blockwise_tiles(q_ids, kv_ids, causal: bool) -> int:
  return len(plan_lib.make_plan(q_ids[None], kv_ids, BLOCK, BLOCK,
                                causal).pairs)


def splash_blocks(q_ids, kv_ids, causal: bool) -> int:
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm  # pylint: disable=g-import-not-at-top
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask_info as mi  # pylint: disable=g-import-not-at-top
  pad = lambda x: np.pad(x, (0, -len(x) % BLOCK), mode="edge")
  q_ids, kv_ids = pad(q_ids), pad(kv_ids)
  mask = accel.splash_mask(GroupMask(q_ids, kv_ids,
                                     np.ones((1, len(kv_ids)), bool), causal))
  info, _ = mi.process_mask(sm.MultiHeadMask([mask]), (BLOCK, BLOCK))
  return int(np.sum(np.asarray(info.block_mask) > 0))


def main():
  print(f"lct_3b geometry, context {CONTEXT} (device 0 of the striped "
        f"order), blocks {BLOCK}x{BLOCK}")
  print(f"{'shots':>5} {'q/device':>9} {'keys':>8} {'blockwise':>10} "
        f"{'splash':>8} {'(N+1)/2N':>9}")
  for shots in (3, 9):
    q_ids, kv_ids = device_ids(shots)
    ratio_b = (blockwise_tiles(q_ids, kv_ids, True) /
               blockwise_tiles(q_ids, kv_ids, False))
    ratio_s = (splash_blocks(q_ids, kv_ids, True) /
               splash_blocks(q_ids, kv_ids, False))
    print(f"{shots:>5} {len(q_ids):>9,} {len(kv_ids):>8,} {ratio_b:>10.3f} "
          f"{ratio_s:>8.3f} {(shots + 1) / (2 * shots):>9.3f}", flush=True)


if __name__ == "__main__":
  main()
