"""Aspect-ratio buckets, cover-crop resizing and frame-substitution hooks."""
import json
import pathlib

import jax
import numpy as np
import pytest

from lct_jax import batch as batch_lib
from lct_jax import configlib
from lct_jax.data import buckets, pipeline, records, resize, sources, transform

ROOT = pathlib.Path(__file__).resolve().parents[1]
GRIDS = ((32, 32), (24, 40), (40, 24))
# Native sizes of the test scenes; nearest bucket by log aspect ratio.
SIZES = [(32, 32), (48, 48), (24, 40), (36, 60), (40, 24), (30, 20),
         (36, 40), (20, 36)]
WANT_BUCKET = [0, 0, 1, 1, 2, 2, 0, 1]


def demo_at_patch_4():
  """The demo config at the geometry these cases were written for (patch 4:
  the grids below are its multiples; a batch of 4 scenes)."""
  c = configlib.load(str(ROOT / "configs" / "demo.py"))
  c.model.patch, c.train.batch_size = 4, 4
  return c


def bucket_config(**data):
  c = demo_at_patch_4()
  c.data.buckets = GRIDS
  c.data.read_threads = 1
  for k, v in data.items():
    c.data[k] = v
  configlib.validate(c)
  return c


class MixedSource:
  """Synthetic scenes resized to native sizes cycling through SIZES."""

  def __init__(self, n, bad=()):
    self.base, self.n, self.bad = sources.SyntheticSource(n), n, set(bad)

  def __len__(self):
    return self.n

  def size(self, i):
    return SIZES[i % len(SIZES)]

  def frame_sizes(self):
    return [self.size(i) for i in range(self.n)]

  def __getitem__(self, i):
    rec = self.base[i]
    rec["frames"] = resize.resize(rec["frames"], *self.size(i))
    if i in self.bad:
      rec["frames"] = rec["frames"][:-1]          # truncated
    return rec


@pytest.mark.parametrize("hw, out", [((32, 32), (16, 16)),
                                     ((30, 50), (24, 40)),
                                     ((24, 40), (32, 32)),
                                     ((7, 9), (13, 5))])
def test_resize_matches_jax_image_resize(hw, out):
  x = np.random.default_rng(0).integers(0, 256, (2, *hw, 3)).astype(np.uint8)
  ref = np.asarray(jax.image.resize(x.astype(np.float32), (2, *out, 3),
                                    "linear", antialias=True))
  np.testing.assert_allclose(resize.resize_float(x, *out), ref, atol=1e-3)
  # uint8: rounded once (ties may round either way against the reference).
  got = resize.resize(x, *out).astype(np.float64)
  assert np.abs(got - np.clip(np.rint(ref), 0, 255)).max() <= 1


def test_cover_crop_keeps_the_centre_box():
  x = np.zeros((1, 20, 40, 3), np.uint8)
  x[:, :, 10:30] = 200                  # the centre 20x20 box is bright
  np.testing.assert_array_equal(resize.cover_crop(x, 10, 10),
                                np.full((1, 10, 10, 3), 200, np.uint8))
  np.testing.assert_array_equal(resize.cover_crop(x, 20, 40), x)


def test_scenes_go_to_the_nearest_aspect_ratio():
  assert [buckets.nearest_bucket(h, w, GRIDS) for h, w in SIZES] == WANT_BUCKET


@pytest.mark.parametrize("bad, match", [
    (((32, 32), (20, 40)), "not within 10%"),
    (((30, 32),), "not divisible by model.patch=4"),
    (((32, 32), (32, 32)), "duplicates"),
])
def test_bad_buckets_are_named(bad, match):
  c = demo_at_patch_4()
  c.data.buckets = bad
  with pytest.raises(ValueError, match=match):
    configlib.validate(c)


def test_plan_covers_each_epoch_with_one_bucket_per_batch():
  sizes = [SIZES[i % 8] for i in range(40)]
  plan = buckets.BucketPlan(sizes, GRIDS, 4, seed=0, shuffle=True,
                            num_epochs=2)
  per_bucket = [sum(WANT_BUCKET[i % 8] == k for i in range(40))
                for k in range(3)]                        # [15, 15, 10]
  assert plan.batches_per_epoch == sum(n // 4 for n in per_bucket) == 8
  assert len(plan) == 2 * 8 * 4
  epochs = []
  for e in range(2):
    seen = []
    for b in range(8):
      elems = [plan[(e * 8 + b) * 4 + s] for s in range(4)]
      assert len({bucket for _, bucket, _ in elems}) == 1
      assert all(WANT_BUCKET[i % 8] == bucket for i, bucket, _ in elems)
      seen += [i for i, _, _ in elems]
    assert len(set(seen)) == len(seen) == 32      # no scene twice an epoch
    epochs.append(seen)
  assert epochs[0] != epochs[1]                   # reshuffled per epoch


def test_bucketed_batches_have_one_grid_and_match_the_source():
  c = bucket_config()
  src = MixedSource(24)
  it = pipeline.make_pipeline(c, src)
  grids = set()
  for _ in range(6):
    batch = next(it)
    h, w = batch["latents"].shape[3:5]
    grids.add((h, w))
    batch_lib.validate_batch(batch, configlib.with_grid(c, h, w))
    for b, sid in enumerate(it.last_info["scene_id"]):
      i = int(sid.split("-")[-1])
      assert GRIDS[WANT_BUCKET[i % 8]] == (h, w)
      rec = records.validate_record(src[i])
      shot = records.split_shots(rec)[int(it.last_info["first_shot"][b])]
      f0, nf = int(it.last_info["first_frame"][b, 0]), batch["num_frames"][b,
                                                                          0]
      want = transform.pixels_to_latents(
          resize.cover_crop(shot[f0:f0 + nf], h, w))
      np.testing.assert_array_equal(batch["latents"][b, 0, :nf], want)
  assert len(grids) > 1


def test_bucketed_processes_agree_and_split_each_batch():
  c = bucket_config()
  whole = pipeline.make_pipeline(c, MixedSource(24), process_count=1,
                                 process_index=0)
  parts = [pipeline.make_pipeline(c, MixedSource(24), process_index=p,
                                  process_count=2) for p in range(2)]
  for _ in range(4):
    batch = next(whole)
    ids = []
    for part in parts:
      pb = next(part)
      assert pb["latents"].shape[3:5] == batch["latents"].shape[3:5]
      ids += part.last_info["scene_id"]
      for j, sid in enumerate(part.last_info["scene_id"]):
        k = whole.last_info["scene_id"].index(sid)
        np.testing.assert_array_equal(pb["latents"][j], batch["latents"][k])
    assert ids == whole.last_info["scene_id"]


def test_bucketed_iterator_resumes_exactly():
  c = bucket_config()
  it = pipeline.make_pipeline(c, MixedSource(24))
  for _ in range(5):                         # 5 > 4 batches: into epoch 2
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  want = [next(it) for _ in range(3)]
  fresh = pipeline.make_pipeline(c, MixedSource(24))
  fresh.set_state(state)
  for a, b in zip(want, [next(fresh) for _ in range(3)]):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


def test_bucketed_bad_records_are_named_or_filled_and_counted():
  c = bucket_config(shuffle=False)
  src = MixedSource(24, bad={0})
  with pytest.raises(records.BadRecordError, match="synthetic-00000000"):
    next(pipeline.make_pipeline(c, src))
  c.data.skip_bad_records = True
  it = pipeline.make_pipeline(c, src)
  batch = next(it)
  ids = it.last_info["scene_id"]
  assert "synthetic-00000000" not in ids and len(ids) == 4
  assert it.bad_record_count() == 1
  batch_lib.validate_batch(batch, c)


def test_frame_substitution_hook_makes_single_frame_shots():
  c = configlib.load(str(ROOT / "configs" / "demo.py"))
  c.data.num_scenes, c.data.read_threads, c.data.p_frame = 16, 1, 1.0
  c.flow.p_frame = 0.0
  src = pipeline.source_from_config(c)
  it = pipeline.make_pipeline(c, src)
  batch = next(it)
  nf = batch["num_frames"]
  pt = c.model.patch_t           # an image is one token frame: patch_t copies
  assert set(np.unique(nf)) <= {0, pt}
  for b, sid in enumerate(it.last_info["scene_id"]):
    rec = records.validate_record(src[int(sid.split("-")[-1])])
    shots = records.split_shots(rec)
    s0 = int(it.last_info["first_shot"][b])
    for k in range(int((nf[b] > 0).sum())):
      frame = batch["latents"][b, k, 0]
      # One of the frames of the kept shot, unchanged.
      assert any(np.array_equal(frame, transform.pixels_to_latents(f))
                 for f in shots[s0 + k])
      for copy in batch["latents"][b, k, 1:pt]:
        np.testing.assert_array_equal(copy, frame)
      assert not batch["latents"][b, k, pt:].any()
  c.flow.p_frame = 0.1
  with pytest.raises(ValueError, match="substitute frames twice"):
    configlib.validate(c)


def test_the_train_step_compiles_one_function_per_bucket():
  from lct_jax.training import create_train_state, init_model, make_train_step
  c = bucket_config()
  c.model.depth, c.train.batch_size = 1, 2
  graphdef, params = init_model(c)
  step = make_train_step(graphdef, c, donate=False)
  state = create_train_state(c, params)
  it = pipeline.make_pipeline(c, MixedSource(24))
  batch = next(it)
  while batch["latents"].shape[3:5] == (32, 32):   # want a non-default grid
    batch = next(it)
  rng = jax.random.key(0)
  # The reference: a model built natively for the bucket's grid.
  cg = configlib.with_grid(c, *batch["latents"].shape[3:5])
  gd_g, _ = init_model(cg)
  want_state, want = make_train_step(gd_g, cg, donate=False)(state, batch, rng)
  got_state, got = step(state, batch, rng)
  assert float(got["loss"]) == float(want["loss"])
  np.testing.assert_array_equal(
      jax.tree.leaves(got_state.params)[0], jax.tree.leaves(
          want_state.params)[0])
  odd = dict(batch, latents=batch["latents"][:, :, :, :28, :36])
  with pytest.raises(ValueError, match="latents"):
    step(state, odd, rng)
