"""The grain input pipeline: contract, contents, resume, hosts, bad records."""
import json
import pathlib

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from lct_jax import batch as batch_lib
from lct_jax import configlib
from lct_jax.data import pipeline, records, sharding, sources, transform, vocab
from lct_jax.parallel import make_mesh

ROOT = pathlib.Path(__file__).resolve().parents[1]


def demo_config(**data):
  c = configlib.load(str(ROOT / "configs" / "demo.py"))
  c.data.num_scenes = 64
  c.data.read_threads = 1
  for k, v in data.items():
    c.data[k] = v
  configlib.validate(c)
  return c


def take(it, k):
  return [next(it) for _ in range(k)]


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def scene_index(scene_id, config):
  return int(scene_id.split("-")[-1]) - config.data.synthetic_seed


def test_batches_meet_the_contract():
  c = demo_config()
  it = pipeline.make_pipeline(c)
  for batch in take(it, 3):
    batch_lib.validate_batch(batch, c)
    assert set(batch) == set(batch_lib.expected_shapes(c, 4))
    assert batch["latents"].dtype == np.float32
    assert batch["text"].dtype == batch["num_frames"].dtype == np.int32
    assert batch["text_len"].dtype == np.int32


def test_pixels_map_to_minus_one_one():
  x = np.arange(256, dtype=np.uint8)
  y = transform.pixels_to_latents(x)
  assert y.dtype == np.float32 and y[0] == -1 and y[255] == 1
  # x / 127.5 - 1, computed exactly (float64) and rounded once to float32.
  np.testing.assert_array_equal(y, (x / 127.5 - 1).astype(np.float32))


def test_contents_are_contiguous_windows_of_the_source():
  c = demo_config()
  N, F, L = c.scene.max_shots, c.scene.frames, c.scene.max_text_len
  src = pipeline.source_from_config(c)
  it = pipeline.make_pipeline(c, src)
  shot_windows = frame_windows = 0
  for _ in range(6):
    batch = next(it)
    info = it.last_info
    for b, sid in enumerate(info["scene_id"]):
      rec = records.validate_record(src[scene_index(sid, c)])
      shots = records.split_shots(rec)
      n = min(len(shots), N)
      s0 = int(info["first_shot"][b])
      assert 0 <= s0 <= len(shots) - n
      shot_windows += s0 > 0
      tokens, length = vocab.encode(rec["global_prompt"], L)
      np.testing.assert_array_equal(batch["text"][b, 0], tokens)
      assert batch["text_len"][b, 0] == length
      for k in range(N):
        if k >= n:                          # padded shot slot: all zero
          assert batch["num_frames"][b, k] == 0 == batch["text_len"][b, k + 1]
          assert not batch["latents"][b, k].any()
          assert not batch["text"][b, k + 1].any()
          continue
        shot, f0 = shots[s0 + k], int(info["first_frame"][b, k])
        f = min(len(shot), F)
        frame_windows += f0 > 0
        assert batch["num_frames"][b, k] == f
        np.testing.assert_array_equal(
            batch["latents"][b, k, :f],
            transform.pixels_to_latents(shot[f0:f0 + f]))
        assert not batch["latents"][b, k, f:].any()   # frame padding
        text = vocab.decode(batch["text"][b, k + 1],
                            batch["text_len"][b, k + 1])
        prompt = rec["shot_prompts"][s0 + k]
        assert text == vocab.decode(*vocab.encode(prompt, L))
        assert not batch["text"][b, k + 1, batch["text_len"][b, k + 1]:].any()
  # The demo's scenes are longer than the slots: windows were exercised.
  assert shot_windows > 0 and frame_windows > 0


def test_deterministic_for_a_seed():
  a = take(pipeline.make_pipeline(demo_config(seed=3)), 3)
  b = take(pipeline.make_pipeline(demo_config(seed=3)), 3)
  c = take(pipeline.make_pipeline(demo_config(seed=4)), 3)
  assert_batches_equal(a, b)
  assert not np.array_equal(a[0]["latents"], c[0]["latents"])


def test_resumes_to_the_exact_next_batch():
  c = demo_config(num_scenes=10)            # 3 batches cross an epoch
  it = pipeline.make_pipeline(c)
  take(it, 2)
  state = json.loads(json.dumps(it.get_state()))   # as orbax stores it
  want = take(it, 3)
  fresh = pipeline.make_pipeline(c)
  fresh.set_state(state)
  assert_batches_equal(take(fresh, 3), want)


def test_processes_get_disjoint_parts_of_each_global_batch():
  c = demo_config()
  B = c.train.batch_size
  whole = pipeline.make_pipeline(c, process_index=0, process_count=1)
  parts = [pipeline.make_pipeline(c, process_index=p, process_count=2)
           for p in range(2)]
  for _ in range(3):
    batch = next(whole)
    by_id = dict(zip(whole.last_info["scene_id"], range(B)))
    seen = []
    for part in parts:
      pb = next(part)
      assert pb["latents"].shape[0] == B // 2
      for j, sid in enumerate(part.last_info["scene_id"]):
        seen.append(sid)
        for k in pb:     # same scene, same windows, whatever the host count
          np.testing.assert_array_equal(pb[k][j], batch[k][by_id[sid]])
    assert len(set(seen)) == len(seen) == B          # disjoint
    assert set(seen) == set(by_id)                    # complete


class CorruptSource:
  """A synthetic source with some records broken in a given way."""

  def __init__(self, n, bad):
    self.base, self.bad = sources.SyntheticSource(n, max_shots=4,
                                                  max_frames=4), bad

  def __len__(self):
    return len(self.base)

  def __getitem__(self, i):
    rec = self.base[i]
    kind = self.bad.get(i)
    if kind == "truncated":
      rec["frames"] = rec["frames"][:-1]
    elif kind == "empty":
      rec.update(shot_prompts=[], shot_num_frames=np.zeros((0,), np.int32),
                 has_cut=np.zeros((0,), bool), frames=rec["frames"][:0])
    elif kind == "size":
      rec["frames"] = rec["frames"][:, :16, :16]
    return rec


BAD = {1: "truncated", 4: "empty", 7: "size"}


@pytest.mark.parametrize("index", sorted(BAD))
def test_a_bad_record_raises_naming_the_scene(index):
  c = demo_config(shuffle=False, num_epochs=1)
  it = pipeline.make_pipeline(c, CorruptSource(12, {index: BAD[index]}))
  with pytest.raises(records.BadRecordError,
                     match=f"synthetic-{index:08d}") as e:
    take(it, 3)
  if BAD[index] == "size":
    assert "16x16" in str(e.value) and "32x32" in str(e.value)


def test_bad_records_are_skipped_and_counted():
  c = demo_config(shuffle=False, num_epochs=1, skip_bad_records=True)
  c.train.batch_size = 3
  it = pipeline.make_pipeline(c, CorruptSource(12, BAD))
  ids = []
  for batch in it:                          # 9 good scenes: 3 full batches
    batch_lib.validate_batch(batch, c)
    ids += it.last_info["scene_id"]
  assert ids == [f"synthetic-{i:08d}" for i in range(12) if i not in BAD]
  assert it.bad_record_count() == 3
  # The count is part of the state: a restored iterator carries it on.
  fresh = pipeline.make_pipeline(c, CorruptSource(12, BAD))
  fresh.set_state(it.get_state())
  assert fresh.bad_record_count() == 3


class RaisingSource(CorruptSource):
  """Records that fail while being *read* (as a TFDS source's do when they
  do not decode or validate), not in the pipeline's own transform."""

  def __getitem__(self, i):
    if i in self.bad:
      raise records.BadRecordError(f"tfds:train[{i}]", "cannot decode record")
    return self.base[i]


def test_records_failing_at_read_time_are_skipped_or_named():
  c = demo_config(shuffle=False, num_epochs=1, skip_bad_records=True)
  c.train.batch_size = 3
  it = pipeline.make_pipeline(c, RaisingSource(12, BAD))
  ids = [sid for _ in it for sid in it.last_info["scene_id"]]
  assert ids == [f"synthetic-{i:08d}" for i in range(12) if i not in BAD]
  assert it.bad_record_count() == 3
  c.data.skip_bad_records = False
  with pytest.raises(records.BadRecordError, match=r"tfds:train\[1\]"):
    take(pipeline.make_pipeline(c, RaisingSource(12, BAD)), 4)


class AllBadSource:
  """Every record is the same truncated scene (cheap: no rendering)."""

  def __init__(self):
    self.record = CorruptSource(1, {0: "truncated"})[0]

  def __len__(self):
    return 5

  def __getitem__(self, i):
    return self.record


def test_skipping_only_bad_records_is_an_error():
  # (No shuffle: grain's index_shuffle costs ~5 ms per element on a pool
  # this small, and the guard reads 1000 elements.)
  c = demo_config(skip_bad_records=True, shuffle=False)
  it = pipeline.make_pipeline(c, AllBadSource())
  with pytest.raises(RuntimeError, match="bad scene records in a row"):
    next(it)


def test_worker_processes_give_the_same_batches():
  want = take(pipeline.make_pipeline(demo_config()), 3)
  it = pipeline.make_pipeline(demo_config(workers=2))
  try:
    assert_batches_equal(take(it, 3), want)
  finally:
    it.close()


def test_latent_records_are_used_directly():
  c = demo_config(shuffle=False)
  rec = sources.SyntheticSource(1)[0]
  lat = np.random.default_rng(0).standard_normal(
      rec["frames"].shape).astype(np.float16)
  del rec["frames"]
  rec["latents"] = lat
  batch = next(pipeline.make_pipeline(c, [rec]))
  nf = int(batch["num_frames"][0, 0])
  got = batch["latents"][0, 0, :nf]
  # The slot holds a window of the scene's latents (shots and frames longer
  # than the slots are windowed), unchanged.
  assert any(np.array_equal(got, lat[o:o + nf].astype(np.float32))
             for o in range(len(lat) - nf + 1))
  c.model.in_channels = 4                    # now the channels disagree
  with pytest.raises(records.BadRecordError,
                     match="synthetic-00000000.*3 channels.*in_channels=4"):
    next(pipeline.make_pipeline(c, [rec]))


def test_global_arrays_are_sharded_over_the_batch_axes():
  c = demo_config()
  c.train.batch_size = 8
  c.mesh.data, c.mesh.fsdp = 4, 2
  mesh = make_mesh(c.mesh)
  batch = next(pipeline.make_pipeline(c))
  arrays = sharding.to_global_arrays(batch, mesh)
  assert sharding.batch_shards(mesh) == 8
  for key, x in arrays.items():
    assert x.sharding.spec == P(("fsdp", "data"))
    assert len(x.addressable_shards) == 8
    assert x.addressable_shards[0].data.shape[0] == 1
    np.testing.assert_array_equal(np.asarray(x), batch[key])
  c.train.batch_size = 4                     # 4 scenes on 8 shards: an error
  with pytest.raises(ValueError, match="not divisible by the 8 batch"):
    sharding.to_global_arrays(next(pipeline.make_pipeline(c)), mesh)


def test_config_checks_data_fields():
  c = demo_config()
  c.data.workers = -1
  with pytest.raises(ValueError, match="data.workers"):
    configlib.validate(c)
  c = demo_config()
  c.data.source = "nope"
  with pytest.raises(ValueError, match="data.source"):
    configlib.validate(c)


def test_a_demo_train_step_accepts_a_pipeline_batch():
  from lct_jax.training import (create_train_state, init_model,
                                make_train_step)
  c = demo_config()
  c.model.depth = 1                          # demo shapes, one block: fast
  c.train.batch_size = 2
  graphdef, params = init_model(c)
  step = make_train_step(graphdef, c)
  batch = next(pipeline.make_pipeline(c))
  _, metrics = step(create_train_state(c, params), batch, jax.random.key(0))
  assert np.isfinite(float(metrics["loss"])) and float(metrics["shots"]) > 0


def test_tfds_dataset_gives_the_same_batches_as_on_the_fly_scenes(tmp_path):
  """data.source='tfds_synthetic' writes scene i = generate_scene(i) to an
  array_record dataset and reads it back: the pipeline must not notice."""
  on_the_fly = demo_config(num_scenes=8)
  from_disk = demo_config(num_scenes=8, source="tfds_synthetic",
                          dir=str(tmp_path), num_validation_scenes=2)
  want = take(pipeline.make_pipeline(on_the_fly), 3)
  got = take(pipeline.make_pipeline(from_disk), 3)
  assert_batches_equal(got, want)
  assert any(tmp_path.rglob("*.array_record*"))
