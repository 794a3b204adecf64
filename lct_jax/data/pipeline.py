"""The grain input pipeline: scene records -> per-process numpy batches.

  source -> seed(data.seed) -> shuffle (per epoch) -> repeat
         -> random_map(record_to_example)        # per-example seeded RNG
         -> slice(process_index::process_count)  # this host's share
         -> to_iter_dataset (threads) [-> mp_prefetch(data.workers)]
         -> SceneIterator: skip/raise bad records, batch (drop remainder)

With aspect-ratio buckets (`data.buckets`, see `buckets.py`) the first three
stages are a `BucketPlan` instead: element j names (record, bucket) so that
each global batch holds one bucket, and the example's RNG is seeded by its
global element index; the rest is the same, except that a bad record's slot
is filled with a good example of the same batch (below).

Why this order:
- The per-example RNG (shot and frame windows) is seeded by the element's
  index in the repeated stream, before the per-process slice: a scene gets
  the same windows whatever the process count, and each epoch new ones.
- Process p takes stream elements p, p + P, p + 2P, ...: its b-th batch holds
  elements (b * Bp + j) * P + p, j < Bp, so over the P processes the b-th
  batches are disjoint and together are exactly stream elements
  [b * B, (b + 1) * B), the global batch a single process would see
  (with no bad records skipped; skipping shifts each process's own stream).
- Bad records (failing when read from the source or in the transform)
  travel as markers to the last stage, which runs in the main process:
  raising and counting behave the same with worker processes, and the count
  is part of the iterator state (saved and restored with it). Skipped
  records shift the stream; with buckets they cannot (a batch must stay in
  its bucket and in step with the other processes), so a skipped record's
  slot repeats another example of its batch (a batch of only bad records
  is an error).
  Worker processes take interleaved slices that grain reads back round-robin,
  so with no filtering before the last stage the order, and thus every
  batch, is independent of `data.workers`.

The iterator's `get_state()` / `set_state()` resume to the exact next batch;
save it with `grain.checkpoint.CheckpointSave(iterator)` in orbax.
"""
from __future__ import annotations

from typing import Any

import grain
import jax
import numpy as np
from absl import flags, logging

from lct_jax.data import buckets, records, sources, transform

# A source whose records are all bad would otherwise loop forever when
# skipping: this many bad records in a row is an error whatever the setting.
MAX_BAD_IN_A_ROW = 1000
BATCH_KEYS = ("latents", "num_frames", "text", "text_len", "pooled")
# `data.source`: what `source_from_config` can open.
DATA_SOURCES = ("synthetic", "tfds_synthetic", "scene_folder")


class _ToExample(grain.transforms.RandomMap):
  """record_to_example as a picklable grain transform (workers spawn)."""

  def __init__(self, spec: transform.ExampleSpec, hooks=()):
    self.spec, self.hooks = spec, tuple(hooks)

  def random_map(self, record, rng: np.random.Generator):
    return transform.record_to_example(record, rng, self.spec, self.hooks)


class _ReadBucketed(grain.transforms.Map):
  """(record index, bucket, global index) -> example on the bucket's grid.

  The RNG is seeded by (data.seed, global element index): a scene's windows
  do not depend on the process count.
  """

  def __init__(self, source, spec, hooks, grids, seed: int):
    self.source, self.spec, self.hooks = source, spec, tuple(hooks)
    self.grids, self.seed = grids, seed

  def map(self, element):
    index, bucket, global_index = element
    try:
      record = self.source[index]
    except records.BadRecordError as e:
      return transform.bad_marker(e)
    rng = np.random.default_rng([self.seed, global_index])
    return transform.record_to_example(record, rng, self.spec, self.hooks,
                                       grid=self.grids[bucket])


class _MarkBadReads:
  """Source wrapper: a record that fails while being read (a TFDS record that
  does not decode or validate) becomes a bad-record marker, so read-time and
  transform-time failures share one raise-or-skip path (`SceneIterator`)."""

  def __init__(self, source):
    self._source = source

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index):
    try:
      return self._source[index]
    except records.BadRecordError as e:
      return transform.bad_marker(e)

  def __repr__(self) -> str:
    return repr(self._source)


class SceneIterator(grain.DatasetIterator):
  """Batches good examples; raises on, or skips and counts, bad records.

  `bad_record_count()` is the number of bad records this process has skipped
  since the start (restored by `set_state`). It lives in the main process,
  so it counts the records of all worker processes.
  `last_info` says where the last batch came from: scene ids, the first kept
  shot of each scene, and the first kept frame of each shot slot.
  """

  def __init__(self, parent: grain.DatasetIterator, batch_size: int,
               skip_bad_records: bool, fill_bad: bool = False):
    super().__init__(parent)
    self._batch_size = batch_size
    self._skip = skip_bad_records
    self._fill = fill_bad
    self._bad = 0
    self.last_info: dict[str, Any] = {}

  def bad_record_count(self) -> int:
    return self._bad

  def _is_good(self, example: dict, in_a_row: int) -> bool:
    """False for a bad record when skipping (counted); raises otherwise."""
    if transform.BAD_ID not in example:
      return True
    if not self._skip:
      raise records.BadRecordError(
          example[transform.BAD_ID], example[transform.BAD_PROBLEM] +
          " (set data.skip_bad_records=True to skip such records)")
    self._bad += 1
    if in_a_row + 1 >= MAX_BAD_IN_A_ROW:
      raise RuntimeError(
          f"{in_a_row + 1} bad scene records in a row (last: "
          f"{example[transform.BAD_ID]!r}: {example[transform.BAD_PROBLEM]}"
          "); the data, or the config's scene grid / model.in_channels, "
          "is wrong")
    return False

  def _next_good(self) -> dict:
    in_a_row = 0
    while True:
      example = next(self._parent)
      if self._is_good(example, in_a_row):
        return example
      in_a_row += 1

  def _next_filled(self) -> list[dict]:
    """Bucketed: the next B elements; bad slots repeat good examples."""
    examples = [next(self._parent) for _ in range(self._batch_size)]
    good = [e for i, e in enumerate(examples) if self._is_good(e, i)]
    if not good:
      raise RuntimeError(
          f"all {self._batch_size} scene records of a batch are bad (last: "
          f"{examples[-1][transform.BAD_ID]!r}: "
          f"{examples[-1][transform.BAD_PROBLEM]})")
    return [e if transform.BAD_ID not in e else good[i % len(good)]
            for i, e in enumerate(examples)]

  def __next__(self) -> dict[str, np.ndarray]:
    # A StopIteration mid-batch drops the partial batch (drop remainder).
    if self._fill:
      examples = self._next_filled()
    else:
      examples = [self._next_good() for _ in range(self._batch_size)]
    batch = {k: np.stack([e[k] for e in examples]) for k in BATCH_KEYS
             if k in examples[0]}
    self.last_info = {
        "scene_id": [e[transform.SCENE_ID] for e in examples],
        "first_shot": np.stack([e[transform.FIRST_SHOT] for e in examples]),
        "first_frame": np.stack([e[transform.FIRST_FRAME] for e in examples]),
    }
    return batch

  def get_state(self) -> dict[str, Any]:
    return {"parent": self._parent.get_state(), "bad_record_count": self._bad}

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state["parent"])
    self._bad = int(state["bad_record_count"])


class SceneBatches(grain.IterDataset):
  """The last stage as a dataset: iter() gives a fresh `SceneIterator`."""

  def __init__(self, parent: grain.IterDataset, batch_size: int,
               skip_bad_records: bool, fill_bad: bool = False):
    super().__init__(parent)
    self._args = (batch_size, skip_bad_records, fill_bad)   # SceneIterator's

  def __iter__(self) -> SceneIterator:
    return SceneIterator(self._parent.__iter__(), *self._args)

  def __str__(self) -> str:
    return (f"SceneBatches(batch_size={self._args[0]}, "
            f"skip_bad_records={self._args[1]})")


def source_from_config(config):
  """The record source `data.source` (one of `DATA_SOURCES`) names."""
  d, s = config.data, config.scene
  if d.source == "scene_folder":
    # Lazy: builders imports tensorflow_datasets (seconds), needed only here.
    from lct_jax.data import builders  # pylint: disable=g-import-not-at-top
    builder = builders.SceneFolder(data_dir=d.dir, config=d.folder_kind)
    return builders.open_split(builder, d.split)
  if s.height != s.width:
    raise ValueError(f"synthetic scenes are square; scene.height={s.height} "
                     f"!= scene.width={s.width}")
  limits = dict(max_shots=d.synthetic_max_shots or s.max_shots,
                max_frames=d.synthetic_max_frames or s.frames, size=s.height)
  m = config.model
  if m.text_mode == "embeddings":
    # Stand-in text-encoder outputs (text_encoder.py) at the model's widths.
    limits.update(text_embed_dim=m.text_embed_dim,
                  pooled_dim=m.pooled_dim if m.use_pooled_text else 0)
  if d.source == "tfds_synthetic":
    from lct_jax.data import builders  # pylint: disable=g-import-not-at-top  (as above)
    if d.synthetic_seed != 0:
      raise ValueError("data.synthetic_seed must be 0 with tfds_synthetic "
                       "(the dataset's train scene i is generate_scene(i))")
    builder = builders.build_synthetic(d.dir, d.num_scenes,
                                       d.num_validation_scenes, **limits)
    return builders.open_split(builder, d.split)
  return sources.SyntheticSource(d.num_scenes, d.synthetic_seed, **limits)


def _process(process_index, process_count) -> tuple[int, int]:
  p = jax.process_index() if process_index is None else int(process_index)
  n = jax.process_count() if process_count is None else int(process_count)
  if not 0 <= p < n:
    raise ValueError(f"process_index={p} not in [0, process_count={n})")
  return p, n


def config_hooks(config) -> list:
  """The frame-substitution hooks the config asks for (data.p_frame)."""
  if config.data.p_frame > 0:
    return [transform.SubstituteFrame(config.data.p_frame,
                                      config.model.patch_t)]
  return []


def _frame_sizes(source) -> list[tuple[int, int]]:
  """(H, W) per record: from the source's metadata, else by reading all."""
  if hasattr(source, "frame_sizes"):
    return source.frame_sizes()
  logging.warning("%r has no frame_sizes(): reading every record once to "
                  "plan aspect-ratio buckets", source)
  sizes = []
  for i in range(len(source)):
    try:
      r = source[i]
      video = r["frames"] if "frames" in r else r["latents"]
      sizes.append(tuple(np.asarray(video).shape[1:3]))
    except records.BadRecordError:
      sizes.append((1, 1))    # read again (and reported) when its turn comes
  return sizes


def _bucketed(config, source, spec, hooks, p: int, n: int):
  d = config.data
  plan = buckets.BucketPlan(
      _frame_sizes(source), buckets.config_grids(config),
      config.train.batch_size, seed=d.seed, shuffle=d.shuffle,
      num_epochs=d.num_epochs, process_index=p, process_count=n)
  logging.info("aspect-ratio buckets (grid: scenes): %s", plan.bucket_sizes())
  read = _ReadBucketed(source, spec, hooks, plan.grids, d.seed)
  return grain.MapDataset.source(plan).map(read)


def make_dataset(config, source=None, *, process_index: int | None = None,
                 process_count: int | None = None,
                 hooks=None) -> SceneBatches:
  """The pipeline as a grain IterDataset of this process's batches.

  `hooks`: frame-substitution hooks (`transform.SubstituteFrame` or any
  picklable `(shots, rng) -> shots`); None takes `config_hooks(config)`.
  """
  d = config.data
  p, n = _process(process_index, process_count)
  if config.train.batch_size % n:
    raise ValueError(f"train.batch_size={config.train.batch_size} is not "
                     f"divisible by process_count={n}")
  source = source_from_config(config) if source is None else source
  if len(source) < 1:
    raise ValueError(f"empty source {source!r}")
  spec = transform.ExampleSpec.from_config(config)
  hooks = config_hooks(config) if hooks is None else list(hooks)
  if d.buckets:
    ds = _bucketed(config, source, spec, hooks, p, n)
  else:
    ds = grain.MapDataset.source(_MarkBadReads(source)).seed(d.seed)
    if d.shuffle:
      ds = ds.shuffle()
    ds = ds.repeat(d.num_epochs or None)
    ds = ds.random_map(_ToExample(spec, hooks))
    ds = ds.slice(slice(p, None, n))
  it = ds.to_iter_dataset(grain.ReadOptions(
      num_threads=d.read_threads, prefetch_buffer_size=d.prefetch))
  if d.workers > 0:
    # grain reads its absl flags when starting workers; outside app.run
    # (tests, notebooks, benchmarks) they are unparsed, which is an error.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=d.workers, per_worker_buffer_size=d.prefetch))
  return SceneBatches(it, config.train.batch_size // n, d.skip_bad_records,
                      fill_bad=bool(d.buckets))


def make_pipeline(config, source=None, *, process_index: int | None = None,
                  process_count: int | None = None) -> SceneIterator:
  """-> iterator of per-process numpy batches (`lct_jax.batch` contract).

  Each batch holds `train.batch_size // process_count` scenes. With
  `data.workers > 0` call this under `if __name__ == "__main__"` (workers
  re-import the main module) and `close()` the iterator when done.
  """
  return iter(make_dataset(config, source, process_index=process_index,
                           process_count=process_count))
