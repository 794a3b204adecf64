"""Static tile schedules of the blockwise kernel: what to visit, decided early.

Group ids are numpy, so at trace time we list the (q tile, kv tile) pairs the
causal rule can allow; the kernel scans over that flat list only. Blocks are
upper bounds, turned into equal 8-aligned tiles, and lengths are padded to a
multiple of the tile with sentinel group ids.
"""
import dataclasses

import jax.numpy as jnp
import numpy as np

# Group ids of padding. A padded query row has the smallest id, so under the
# causal rule it attends nothing and never raises a tile's max; a padded key
# has the largest id, so it never makes a tile needed.
PAD_Q_GROUP = np.iinfo(np.int32).min
PAD_KV_GROUP = np.iinfo(np.int32).max


def _round_up(x: int, multiple: int) -> int:
  return -(-x // multiple) * multiple


def _check_block(name: str, block) -> int:
  if isinstance(block, bool) or not isinstance(block, (int, np.integer)):
    raise ValueError(f"{name} must be a positive int, got {block!r}.")
  if block <= 0:
    raise ValueError(f"{name} must be a positive int, got {block}.")
  return int(block)


def _even_tiles(length: int, block: int, align: int = 8) -> int:
  """Tile size <= block splitting `length` into equal tiles, 8-aligned.

  Alignment (a multiple of 8 rows) keeps tiles friendly to accelerator
  matmuls; blocks smaller than 8 are used as they are (tests, tiny inputs).
  """
  if length <= block:
    return max(1, length)
  num_tiles = -(-length // block)
  tile = -(-length // num_tiles)
  if block >= align:
    tile = min(_round_up(tile, align), block)
  return tile


def _pad_ids(ids: np.ndarray, padded_len: int, fill: int) -> np.ndarray:
  out = np.full((padded_len,), fill, dtype=np.int32)
  out[:ids.shape[0]] = ids
  return out


@dataclasses.dataclass(frozen=True, eq=False)
class Plan:
  """Everything static about one call: block sizes, padded ids, schedule."""
  block_q: int
  block_kv: int
  causal: bool
  q_group_pad: np.ndarray   # int32 [Sq_pad]
  kv_group_pad: np.ndarray  # int32 [Sk_pad]
  pairs: np.ndarray         # int32 [P, 2] (q tile, kv tile), sorted by q tile

  @property
  def q_len_pad(self) -> int:
    return self.q_group_pad.shape[0]

  @property
  def kv_len_pad(self) -> int:
    return self.kv_group_pad.shape[0]


def plan_one(q_group, kv_group, block_q: int, block_kv: int,
               causal: bool) -> Plan:
  """Clamps blocks, pads group ids and lists the tile pairs to visit."""
  q_group = np.asarray(q_group, dtype=np.int32)
  kv_group = np.asarray(kv_group, dtype=np.int32)
  block_q = _check_block("block_q", block_q)
  block_kv = _check_block("block_kv", block_kv)
  # The blocks are upper bounds: use as few tiles as they allow, of equal
  # size, so padding stays under one alignment unit per tile (1104 tokens at
  # block 512: 3 tiles of 368, not 1536 padded tokens and 2.2x the work).
  block_q = _even_tiles(q_group.shape[0], block_q)
  block_kv = _even_tiles(kv_group.shape[0], block_kv)
  q_group_pad = _pad_ids(q_group, _round_up(q_group.shape[0], block_q),
                         PAD_Q_GROUP)
  kv_group_pad = _pad_ids(kv_group, _round_up(kv_group.shape[0], block_kv),
                          PAD_KV_GROUP)
  num_q_tiles = q_group_pad.shape[0] // block_q
  num_kv_tiles = kv_group_pad.shape[0] // block_kv
  if causal:
    # A pair is needed iff some key of the kv tile has a group <= the
    # largest query group of the q tile.
    q_max_Nq = q_group_pad.reshape(num_q_tiles, block_q).max(axis=1)
    kv_min_Nk = kv_group_pad.reshape(num_kv_tiles, block_kv).min(axis=1)
    needed_NqxNk = kv_min_Nk[None, :] <= q_max_Nq[:, None]
  else:
    needed_NqxNk = np.ones((num_q_tiles, num_kv_tiles), dtype=bool)
  # np.nonzero walks row-major, so pairs come sorted by q tile.
  q_tiles, kv_tiles = np.nonzero(needed_NqxNk)
  pairs = np.stack([q_tiles, kv_tiles], axis=1).astype(np.int32)
  return Plan(block_q, block_kv, bool(causal), q_group_pad, kv_group_pad,
               pairs.reshape(-1, 2))


def tile_schedule(q_group, kv_group, block_q: int, block_kv: int,
                  causal: bool) -> np.ndarray:
  """int32 [P, 2]: the (q tile, kv tile) pairs the kernel visits, by q tile.

  Blocks are upper bounds, turned into equal tiles (`_even_tiles`) and the
  lengths padded up to a multiple of the tiles, exactly as
  `attend_blockwise` does.
  """
  if np.asarray(q_group).size == 0 or np.asarray(kv_group).size == 0:
    return np.zeros((0, 2), dtype=np.int32)
  return plan_one(q_group, kv_group, block_q, block_kv, causal).pairs


def make_plan(q_group, kv_group, block_q: int, block_kv: int,
              causal: bool) -> Plan:
  """The static plan of one call; `q_group`/`kv_group` may be 2-D [R, S].

  With rows (one per device of a context-parallel mesh, whose chunks may
  hold different groups) the schedule is the union of the rows' schedules
  and the kernel must get each device's ids at run time (`ids=`).
  """
  q_rows = np.atleast_2d(np.asarray(q_group, dtype=np.int32))
  kv_rows = np.atleast_2d(np.asarray(kv_group, dtype=np.int32))
  rows = max(len(q_rows), len(kv_rows))
  if len(q_rows) not in (1, rows) or len(kv_rows) not in (1, rows):
    raise ValueError(f"make_plan: {len(q_rows)} q rows vs {len(kv_rows)} "
                     "kv rows")
  plans = [plan_one(q_rows[r % len(q_rows)], kv_rows[r % len(kv_rows)],
                      block_q, block_kv, causal) for r in range(rows)]
  # np.unique sorts rows lexicographically: still by q tile first.
  pairs = np.unique(np.concatenate([p.pairs for p in plans]), axis=0)
  return dataclasses.replace(plans[0], pairs=pairs.reshape(-1, 2))


def pad_ids(plan: Plan, q_ids, kv_ids):
  """Traced ids (each device's chunk) padded like the plan pads its own."""
  q_ids = jnp.pad(q_ids.astype(jnp.int32), (0, plan.q_len_pad - q_ids.shape[0]),
                  constant_values=PAD_Q_GROUP)
  kv_ids = jnp.pad(kv_ids.astype(jnp.int32),
                   (0, plan.kv_len_pad - kv_ids.shape[0]),
                   constant_values=PAD_KV_GROUP)
  return q_ids, kv_ids
