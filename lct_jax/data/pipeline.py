"""The grain input pipeline: scene records -> per-process numpy batches.

  source -> seed(data.seed) -> shuffle (per epoch) -> repeat
         -> random_map(record_to_example)        # per-example seeded RNG
         -> slice(process_index::process_count)  # this host's share
         -> to_iter_dataset (threads) [-> mp_prefetch(data.workers)]
         -> SceneIterator: skip/raise bad records, batch (drop remainder)

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
  travel as markers to the last stage, which runs in the main process: raising and counting behave the same with worker processes, and
  the count is part of the iterator state (saved and restored with it).
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
from absl import flags
import numpy as np

from lct_jax.data import records, sources, transform

# A source whose records are all bad would otherwise loop forever when
# skipping: this many bad records in a row is an error whatever the setting.
MAX_BAD_IN_A_ROW = 1000
BATCH_KEYS = ("latents", "num_frames", "text", "text_len")


class _ToExample(grain.transforms.RandomMap):
  """record_to_example as a picklable grain transform (workers spawn)."""

  def __init__(self, spec: transform.ExampleSpec):
    self.spec = spec

  def random_map(self, record, rng: np.random.Generator):
    return transform.record_to_example(record, rng, self.spec)


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
               skip_bad_records: bool):
    super().__init__(parent)
    self._batch_size = batch_size
    self._skip = skip_bad_records
    self._bad = 0
    self.last_info: dict[str, Any] = {}

  def bad_record_count(self) -> int:
    return self._bad

  def _next_good(self) -> dict:
    in_a_row = 0
    while True:
      example = next(self._parent)
      if transform.BAD_ID not in example:
        return example
      if not self._skip:
        raise records.BadRecordError(
            example[transform.BAD_ID], example[transform.BAD_PROBLEM] +
            " (set data.skip_bad_records=True to skip such records)")
      self._bad += 1
      in_a_row += 1
      if in_a_row >= MAX_BAD_IN_A_ROW:
        raise RuntimeError(
            f"{in_a_row} bad scene records in a row (last: "
            f"{example[transform.BAD_ID]!r}: {example[transform.BAD_PROBLEM]}"
            "); the data, or the config's scene grid / model.in_channels, "
            "is wrong")

  def __next__(self) -> dict[str, np.ndarray]:
    # A StopIteration mid-batch drops the partial batch (drop remainder).
    examples = [self._next_good() for _ in range(self._batch_size)]
    batch = {k: np.stack([e[k] for e in examples]) for k in BATCH_KEYS}
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
               skip_bad_records: bool):
    super().__init__(parent)
    self._batch_size = batch_size
    self._skip = skip_bad_records

  def __iter__(self) -> SceneIterator:
    return SceneIterator(self._parent.__iter__(), self._batch_size,
                         self._skip)

  def __str__(self) -> str:
    return (f"SceneBatches(batch_size={self._batch_size}, "
            f"skip_bad_records={self._skip})")


def source_from_config(config):
  """The record source `data.source` names; see configlib for the options."""
  d, s = config.data, config.scene
  if d.source == "scene_folder":
    from lct_jax.data import builders  # pylint: disable=g-import-not-at-top
    builder = builders.SceneFolder(data_dir=d.dir, config=d.folder_kind)
    return builders.open_split(builder, d.split)
  if s.height != s.width:
    raise ValueError(f"synthetic scenes are square; scene.height={s.height} "
                     f"!= scene.width={s.width}")
  limits = dict(max_shots=d.synthetic_max_shots or s.max_shots,
                max_frames=d.synthetic_max_frames or s.frames, size=s.height)
  if d.source == "tfds_synthetic":
    from lct_jax.data import builders  # pylint: disable=g-import-not-at-top
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


def make_dataset(config, source=None, *, process_index: int | None = None,
                 process_count: int | None = None) -> SceneBatches:
  """The pipeline as a grain IterDataset of this process's batches."""
  d = config.data
  if config.model.text_mode != "tokens":
    raise ValueError("the scene pipeline makes token ids; model.text_mode="
                     f"{config.model.text_mode!r} needs text embeddings")
  p, n = _process(process_index, process_count)
  if config.train.batch_size % n:
    raise ValueError(f"train.batch_size={config.train.batch_size} is not "
                     f"divisible by process_count={n}")
  source = source_from_config(config) if source is None else source
  if len(source) < 1:
    raise ValueError(f"empty source {source!r}")
  ds = grain.MapDataset.source(_MarkBadReads(source)).seed(d.seed)
  if d.shuffle:
    ds = ds.shuffle()
  ds = ds.repeat(d.num_epochs or None)
  ds = ds.random_map(_ToExample(transform.ExampleSpec.from_config(config)))
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
  return SceneBatches(it, config.train.batch_size // n, d.skip_bad_records)


def make_pipeline(config, source=None, *, process_index: int | None = None,
                  process_count: int | None = None) -> SceneIterator:
  """-> iterator of per-process numpy batches (`lct_jax.batch` contract).

  Each batch holds `train.batch_size // process_count` scenes. With
  `data.workers > 0` call this under `if __name__ == "__main__"` (workers
  re-import the main module) and `close()` the iterator when done.
  """
  return iter(make_dataset(config, source, process_index=process_index,
                           process_count=process_count))
