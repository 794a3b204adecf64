"""Aspect-ratio buckets: one latent grid per batch, about equal token area.

Real scenes come at their native aspect ratios. With `data.buckets` set
(latent grids (h, w) of about the config grid's area), every scene goes to
the bucket nearest its aspect ratio (in log space), pixels are scaled to cover
the bucket and centre-cropped (`resize.cover_crop`), and every global batch
holds scenes of one bucket, so the step compiles once per bucket and the
token budget (hence memory) is about the same for all of them.

The batches are planned at the index level, before any record is read:
per epoch (seeded by `data.seed` and the epoch) each bucket's records are
shuffled and cut into global batches of `train.batch_size` (the remainder
of each bucket is dropped that epoch), and the list of batches is shuffled.
Element j of the stream is slot j % B of global batch j // B, so
  * the plan is a pure function of j: the iterator state is a position,
    and resuming is exact;
  * process p of P takes slots [p * B/P, (p + 1) * B/P) of every global batch:
    all processes agree on each step's bucket, their shares are disjoint,
    and together they are the global batch.
"""
from __future__ import annotations

import math
import sys

import numpy as np

# Buckets must be within this fraction of the config grid's area.
AREA_TOLERANCE = 0.1


def config_grids(config) -> tuple[tuple[int, int], ...]:
  """The grids batches may have: data.buckets, or just the config grid."""
  buckets = tuple(tuple(int(v) for v in b) for b in config.data.buckets)
  return buckets or ((config.scene.height, config.scene.width),)


def validate_buckets(config) -> None:
  """Raises ValueError naming a bucket that is malformed or off in area."""
  s, m = config.scene, config.model
  area = s.height * s.width
  for b in config.data.buckets:
    if len(b) != 2 or min(b) < 1:
      raise ValueError(f"data.buckets entry {tuple(b)} must be (height, "
                       "width) of positive sizes")
    h, w = b
    if h % m.patch or w % m.patch:
      raise ValueError(f"data.buckets entry {(h, w)} is not divisible by "
                       f"model.patch={m.patch}")
    if abs(h * w / area - 1) > AREA_TOLERANCE:
      raise ValueError(
          f"data.buckets entry {(h, w)} has area {h * w}, not within "
          f"{AREA_TOLERANCE:.0%} of the scene grid's {s.height}x{s.width} = "
          f"{area} (buckets share one token budget)")
  if len(set(map(tuple, config.data.buckets))) != len(config.data.buckets):
    raise ValueError(f"data.buckets has duplicates: {config.data.buckets}")


def nearest_bucket(height: int, width: int,
                   grids: tuple[tuple[int, int], ...]) -> int:
  """Index of the grid whose aspect ratio is nearest (log scale)."""
  r = math.log(height / width)
  return min(range(len(grids)),
             key=lambda i: abs(math.log(grids[i][0] / grids[i][1]) - r))


class BucketPlan:
  """Stream element j -> (record index, bucket index, global element j).

  A random-access "source" for grain: the pipeline reads the record named
  by each element and transforms it onto the bucket's grid.
  """

  def __init__(self, frame_sizes, grids, batch_size: int, *, seed: int,
               shuffle: bool, num_epochs: int, process_index: int = 0,
               process_count: int = 1):
    self.grids = tuple(grids)
    self.B, self.seed, self.shuffle = batch_size, seed, shuffle
    self.p, self.P = process_index, process_count
    self.Bp = batch_size // process_count
    bucket_of = np.array([nearest_bucket(h, w, self.grids)
                          for h, w in frame_sizes], np.int64)
    self.members = [np.flatnonzero(bucket_of == k)
                    for k in range(len(self.grids))]
    self.batches_per_epoch = sum(len(m) // batch_size for m in self.members)
    if self.batches_per_epoch == 0:
      raise ValueError(
          f"no bucket holds a full batch of {batch_size} scenes (scenes per "
          f"bucket {dict(zip(self.grids, map(len, self.members)))})")
    self.num_epochs = num_epochs
    # (epoch, batches) as one tuple: reader threads swap it atomically.
    self._cache = (-1, None)

  def bucket_sizes(self) -> dict[tuple[int, int], int]:
    return {g: len(m) for g, m in zip(self.grids, self.members)}

  def _epoch_batches(self, epoch: int) -> list[tuple[int, np.ndarray]]:
    """[(bucket, record indices [B])] of one epoch, in order."""
    cached_epoch, cached = self._cache
    if epoch != cached_epoch:
      rng = np.random.default_rng([self.seed, epoch])
      batches = []
      for k, members in enumerate(self.members):
        order = rng.permutation(members) if self.shuffle else members
        for i in range(len(order) // self.B):
          batches.append((k, order[i * self.B:(i + 1) * self.B]))
      if self.shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
      else:
        batches.sort(key=lambda b: int(b[1][0]))
      self._cache = (epoch, batches)
      return batches
    return cached

  def __len__(self) -> int:
    per_process = self.batches_per_epoch * self.Bp
    return per_process * self.num_epochs if self.num_epochs else sys.maxsize

  def __getitem__(self, i: int) -> tuple[int, int, int]:
    i = int(i)
    if not 0 <= i < len(self):
      raise IndexError(f"element {i} out of range [0, {len(self)})")
    batch, slot = divmod(i, self.Bp)
    epoch, b = divmod(batch, self.batches_per_epoch)
    bucket, record_indices = self._epoch_batches(epoch)[b]
    slot_global = self.p * self.Bp + slot
    return (int(record_indices[slot_global]), bucket,
            batch * self.B + slot_global)
