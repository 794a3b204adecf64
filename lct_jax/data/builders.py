"""TFDS builders that write scene records as array_record (no TensorFlow).

Two builders share one feature spec, the flat record of `records.py`:
  SyntheticScenes  record i of a split = scene_to_record(generate_scene(seed))
                   with seed = i (train) or VALIDATION_SEED_BASE + i.
  SceneFolder      a user's folder of real scenes (`folder.py`); config
                   "pixels" (videos) or "latents" (.npy), because the two
                   store different video features.
Read with `open_split(builder, split)`: a random-access source (len, [i])
of validated records with text as str, which grain takes directly.

Feature choices, all of which encode and decode without TensorFlow:
  * video is `Tensor(shape=(None, None, None, C), encoding="zlib")`: TFDS
    refuses a Tensor with several unknown dimensions unless it is encoded as
    bytes, and zlib shrinks the flat synthetic backgrounds several-fold.
  * shot prompts are `Sequence(Text())` and come back as a list of bytes.
  * `DatasetInfo(disable_shuffling=True)`: without it records come back in
    key-hash order, and "record i = seed i" would not hold.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np
import tensorflow_datasets as tfds

from lct_jax.data import folder
from lct_jax.data import records
from lct_jax.data.records import BadRecordError
from lct_jax.data.records import validate_record
from lct_jax.data.sources import SyntheticSource

VALIDATION_SEED_BASE = 10**9     # validation seeds never meet train seeds
FILE_FORMAT = "array_record"     # random access, and readable without TF


def scene_features(kind: str = "pixels") -> tfds.features.FeaturesDict:
  """The record's feature spec; kind "pixels" (frames) or "latents"."""
  if kind == "pixels":
    video = {"frames": tfds.features.Tensor(
        shape=(None, None, None, 3), dtype=np.uint8, encoding="zlib")}
  elif kind == "latents":
    video = {"latents": tfds.features.Tensor(
        shape=(None, None, None, None), dtype=np.float16, encoding="zlib")}
  else:
    raise ValueError(f"kind must be 'pixels' or 'latents', got {kind!r}")
  return tfds.features.FeaturesDict({
      "scene_id": tfds.features.Text(),
      "global_prompt": tfds.features.Text(),
      "shot_prompts": tfds.features.Sequence(tfds.features.Text()),
      "shot_num_frames": tfds.features.Tensor(shape=(None,), dtype=np.int32),
      "has_cut": tfds.features.Tensor(shape=(None,), dtype=np.bool_),
      "factors_json": tfds.features.Text(),
      "encoding_json": tfds.features.Text(),
      # Optional text embeddings (records.py); size 0 when a record has none.
      records.EMBEDDING_LEN: tfds.features.Tensor(shape=(None,),
                                                  dtype=np.int32),
      records.EMBEDDINGS: tfds.features.Tensor(
          shape=(None, None), dtype=np.float16, encoding="zlib"),
      records.POOLED: tfds.features.Tensor(
          shape=(None, None), dtype=np.float16, encoding="zlib"),
      **video,
  })


def to_features(record: dict) -> dict:
  """A validated record -> the builder's feature dict (fills absent fields)."""
  out = dict(record)
  out.setdefault(records.EMBEDDING_LEN, np.zeros((0,), np.int32))
  out.setdefault(records.EMBEDDINGS, np.zeros((0, 0), np.float16))
  out.setdefault(records.POOLED, np.zeros((0, 0), np.float16))
  out.setdefault("encoding_json", "")
  out[records.EMBEDDINGS] = np.asarray(out[records.EMBEDDINGS], np.float16)
  out[records.POOLED] = np.asarray(out[records.POOLED], np.float16)
  return out


class _ArrayRecordBuilder(tfds.core.GeneratorBasedBuilder):
  """Defaults to array_record and counts the scenes skipped as bad."""

  disable_shuffling = True

  # tfds derives code_path (only used to find download checksums, and these
  # builders download nothing) through the `importlib_resources` backport,
  # which is not installed: a builder inside a package then fails to build.
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    return None

  def __init__(self, *, skip_bad_records: bool = False, **kwargs):
    kwargs.setdefault("file_format", FILE_FORMAT)
    self.skip_bad_records = skip_bad_records
    self.skipped: dict[str, int] = {}     # split -> scenes skipped this build
    super().__init__(**kwargs)

  def _dataset_info(self, kind: str, description: str):
    return tfds.core.DatasetInfo(
        builder=self, description=description, features=scene_features(kind),
        disable_shuffling=True,
        # Saved with the dataset: skipped counts, and each split's frame
        # sizes in record order, which aspect-ratio bucketing needs without
        # decoding every video (`SceneSource.frame_sizes`).
        metadata=tfds.core.MetadataDict(skipped={}, frame_sizes={}))

  def _emit(self, split: str, key, record: dict):
    """(key, features) of a record, noting its frame size for the split."""
    video = record["frames"] if "frames" in record else record["latents"]
    sizes = self.info.metadata.setdefault("frame_sizes", {})
    sizes.setdefault(split, []).append([int(video.shape[1]),
                                        int(video.shape[2])])
    return key, to_features(record)

  def _guard(self, split: str, key, make_record):
    """make_record() or, when skipping, None after counting the failure."""
    try:
      return make_record()
    except BadRecordError as e:
      if not self.skip_bad_records:
        raise
      self.skipped[split] = self.skipped.get(split, 0) + 1
      self.info.metadata["skipped"] = dict(self.skipped)
      logging.warning("skipping %s record %s: %s (%d skipped in %s so far)",
                      split, key, e, self.skipped[split], split)
      return None


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
  num_train: int = 64
  num_validation: int = 16
  max_shots: int = 4
  max_frames: int = 4
  size: int = 32
  text_embed_dim: int = 0
  pooled_dim: int = 0


def synthetic_config(num_train: int = 64, num_validation: int = 16,
                     **limits) -> SyntheticConfig:
  """A config named after its arguments (`limits`: the other fields of
  `SyntheticConfig`): different sizes never share files."""
  if not 0 < num_train <= VALIDATION_SEED_BASE or num_validation < 0:
    raise ValueError(f"need 0 < num_train <= {VALIDATION_SEED_BASE} and "
                     f"num_validation >= 0; got {num_train}, {num_validation}")
  c = SyntheticConfig(name="", num_train=num_train,
                      num_validation=num_validation, **limits)
  name = (f"t{num_train}_v{num_validation}_shots{c.max_shots}"
          f"_frames{c.max_frames}_size{c.size}")
  if c.text_embed_dim:
    name += f"_emb{c.text_embed_dim}p{c.pooled_dim}"
  return dataclasses.replace(c, name=name)


class SyntheticScenes(_ArrayRecordBuilder):
  """Procedural multi-shot scenes (`synthetic.py`), pixels + true factors."""

  VERSION = tfds.core.Version("1.2.0")
  RELEASE_NOTES = {"1.1.0": "optional prompt embeddings; frame sizes",
                   "1.2.0": "encoding_json (how a scene was VAE-encoded)"}
  BUILDER_CONFIGS = [synthetic_config()]

  def _info(self):
    return self._dataset_info("pixels", "Synthetic multi-shot scenes with "
                              "ground-truth factors (lct_jax.data.synthetic).")

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: scenes are a function of the seed.
    cfg = self.builder_config
    splits = {"train": self._generate_examples("train", 0, cfg.num_train)}
    if cfg.num_validation:
      splits["validation"] = self._generate_examples(
          "validation", VALIDATION_SEED_BASE, cfg.num_validation)
    return splits

  def _generate_examples(self, split, first_seed, count):
    cfg = self.builder_config
    source = SyntheticSource(
        count, first_seed, max_shots=cfg.max_shots, max_frames=cfg.max_frames,
        size=cfg.size, text_embed_dim=cfg.text_embed_dim,
        pooled_dim=cfg.pooled_dim)
    for i in range(count):
      yield self._emit(split, i, source[i])


def split_seed(split: str, index: int) -> int:
  """The generator seed of record `index` of a SyntheticScenes split."""
  return index + (VALIDATION_SEED_BASE if split == "validation" else 0)


class SceneFolder(_ArrayRecordBuilder):
  """A user's scene folder (format in `folder.py` and data/README.md).

  Scenes are taken in sorted id order; the last `num_validation` form the
  validation split. Keep one data_dir per source folder: the data_dir, not
  the source path, identifies the built dataset.
  """

  VERSION = tfds.core.Version("1.2.0")
  RELEASE_NOTES = {"1.1.0": "optional prompt embeddings; frame sizes",
                   "1.2.0": "encoding_json (how a scene was VAE-encoded)"}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="pixels", description="videos, uint8"),
      tfds.core.BuilderConfig(name="latents", description=".npy, float16"),
  ]

  def __init__(self, *, src: str | None = None, num_validation: int = 0,
               **kwargs):
    self.src = src   # None is fine for reading an already built dataset
    self.num_validation = num_validation
    super().__init__(**kwargs)

  def _info(self):
    return self._dataset_info(self.builder_config.name,
                              "Real multi-shot scenes from a scene folder.")

  def _split_generators(self, dl_manager):
    del dl_manager
    if self.src is None:
      raise ValueError("SceneFolder needs src=<scene folder> to build")
    ids = folder.list_scenes(self.src)
    cut = len(ids) - self.num_validation
    if cut < 1 or self.num_validation < 0:
      raise ValueError(f"{len(ids)} scenes in {self.src!r} cannot give "
                       f"{self.num_validation} validation scenes and a train "
                       "split")
    splits = {"train": self._generate_examples("train", ids[:cut])}
    if self.num_validation:
      splits["validation"] = self._generate_examples("validation", ids[cut:])
    return splits

  def _generate_examples(self, split, scene_ids):
    kind = self.builder_config.name
    for i, scene_id in enumerate(scene_ids):
      record = self._guard(split, scene_id, lambda s=scene_id: (
          folder.read_scene(self.src, s, kind)))
      if record is not None:
        # Integer keys keep sorted-id order (disable_shuffling sorts keys).
        yield self._emit(split, i, record)


def build_synthetic(data_dir: str, num_train: int, num_validation: int,
                    **limits) -> SyntheticScenes:
  """Builds the synthetic dataset under data_dir unless already there.

  Args:
    data_dir: TFDS data directory.
    num_train: train scenes (seeds 0..num_train-1).
    num_validation: validation scenes (seeds VALIDATION_SEED_BASE + i).
    **limits: max_shots, max_frames, size, as for `generate_scene`.
  """
  config = synthetic_config(num_train, num_validation, **limits)
  builder = SyntheticScenes(data_dir=data_dir, config=config)
  builder.download_and_prepare()
  return builder


def build_folder(src: str, data_dir: str, kind: str | None = None, *,
                 num_validation: int = 0,
                 skip_bad_records: bool = False) -> SceneFolder:
  """Builds a SceneFolder dataset (kind None: that of the first scene)."""
  kind = kind or folder.detect_kind(src)
  builder = SceneFolder(data_dir=data_dir, config=kind, src=src,
                        num_validation=num_validation,
                        skip_bad_records=skip_bad_records)
  builder.download_and_prepare()
  return builder


def skipped_records(builder) -> dict[str, int]:
  """Scenes skipped as bad per split when the dataset was built."""
  return dict(builder.info.metadata.get("skipped", {}))


class SceneSource:
  """Random access to validated records: len(source), source[i] -> dict.

  Decoding and validation run lazily per record. A record that fails to
  decode or validate raises BadRecordError naming its scene id (or, if not
  even that decodes, the split and index), for the pipeline to stop on or
  skip and count.
  """

  def __init__(self, source, name: str, frame_sizes=None):
    self._source = source
    self._name = name
    self._frame_sizes = frame_sizes

  def frame_sizes(self) -> list[tuple[int, int]]:
    """(H, W) of each record's frames, from the dataset's metadata."""
    if self._frame_sizes is None or len(self._frame_sizes) != len(self):
      raise ValueError(f"{self._name}: the dataset stores no frame sizes "
                       "(built before version 1.1.0?); rebuild it")
    return [tuple(s) for s in self._frame_sizes]

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict:
    index = index.__index__()
    if not -len(self) <= index < len(self):
      raise IndexError(f"{self._name}: index {index} out of range "
                       f"[0, {len(self)})")
    index %= len(self)
    try:
      record = self._source[index]
    except Exception as e:  # Corrupt bytes fail anywhere in the decoder.
      raise BadRecordError(f"{self._name}[{index}]", "cannot decode record "
                           f"({type(e).__name__}: {e})") from e
    return validate_record(record)

  def __repr__(self) -> str:
    return f"SceneSource({self._name}, {len(self)} records)"


def open_split(builder, split: str) -> SceneSource:
  """The split's validated, text-normalised records, by index."""
  sizes = builder.info.metadata.get("frame_sizes", {}).get(split)
  return SceneSource(builder.as_data_source(split),
                     f"{builder.name}/{builder.builder_config.name}:{split}",
                     sizes)
