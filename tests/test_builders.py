"""TFDS scene builders: round trips, the folder format, bad input, the CLI."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from lct_jax.data import builders
from lct_jax.data import folder
from lct_jax.data.records import BadRecordError
from lct_jax.data.records import scene_to_record
from lct_jax.data.synthetic import generate_scene

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "data", "example_scene")
LIMITS = dict(max_shots=3, max_frames=4, size=32)


def assert_same_record(got, want):
  assert set(got) == set(want) | {"factors_json", "encoding_json"}
  for key, value in want.items():
    if isinstance(value, np.ndarray):
      np.testing.assert_array_equal(got[key], value, err_msg=key)
      assert got[key].dtype == value.dtype, key
    else:
      assert got[key] == value, key


def latent_record(seed, scene_id, channels=8):
  """A synthetic scene's prompts with random float16 latents."""
  record = scene_to_record(generate_scene(seed, **LIMITS))
  frames = record.pop("frames")
  record["latents"] = np.random.default_rng(seed).standard_normal(
      (len(frames), 4, 4, channels)).astype(np.float16)
  record.update(scene_id=scene_id, factors_json="")
  return record


def pixel_record(seed, scene_id=None):
  record = scene_to_record(generate_scene(seed, **LIMITS))
  if scene_id:
    record["scene_id"] = scene_id
  return record


def test_synthetic_round_trip(tmp_path):
  builder = builders.build_synthetic(str(tmp_path), 6, 2, **LIMITS)
  ids = {}
  for split, count in (("train", 6), ("validation", 2)):
    source = builders.open_split(builder, split)
    assert len(source) == count
    for i in range(count):
      want = scene_to_record(generate_scene(builders.split_seed(split, i),
                                            **LIMITS))
      assert_same_record(source[i], want)     # and in index order
    ids[split] = {source[i]["scene_id"] for i in range(count)}
  assert not ids["train"] & ids["validation"]
  assert builders.skipped_records(builder) == {}
  assert "tensorflow" not in sys.modules      # array_record needs no TF
  # A second call reuses the files; another size gets its own config.
  again = builders.build_synthetic(str(tmp_path), 6, 2, **LIMITS)
  assert again.data_dir == builder.data_dir
  assert builders.synthetic_config(6, 3).name != builder.builder_config.name


def test_source_is_random_access_and_checked(tmp_path):
  source = builders.open_split(
      builders.build_synthetic(str(tmp_path), 3, 0, **LIMITS), "train")
  assert source[-1]["scene_id"] == source[2]["scene_id"]
  with pytest.raises(IndexError):
    source[3]
  assert isinstance(source[0]["global_prompt"], str)
  assert all(isinstance(p, str) for p in source[0]["shot_prompts"])


def _folder(tmp_path, name, records):
  src = str(tmp_path / name)
  for record in records:
    folder.write_scene(src, record)
  return src


def test_folder_round_trip_pixels_and_latents(tmp_path):
  pixels = [pixel_record(3), pixel_record(4)]   # a cut scene, a take
  latents = [latent_record(5, "b_latents"), latent_record(8, "a_latents")]
  pixel_src = _folder(tmp_path, "pixels", pixels)
  latent_src = _folder(tmp_path, "latents", latents)
  assert folder.detect_kind(latent_src) == "latents"

  built = builders.build_folder(pixel_src, str(tmp_path / "px"))
  source = builders.open_split(built, "train")
  assert built.builder_config.name == "pixels" and len(source) == 2
  for got, want in zip(source, sorted(pixels, key=lambda r: r["scene_id"])):
    assert_same_record(got, want)               # lossless MP4: exact pixels

  built = builders.build_folder(latent_src, str(tmp_path / "lat"),
                                num_validation=1)
  train = builders.open_split(built, "train")
  validation = builders.open_split(built, "validation")
  assert_same_record(train[0], latents[1])      # sorted ids: a_ before b_
  assert_same_record(validation[0], latents[0])


def test_has_cut_defaults_to_the_prompt_prefix(tmp_path):
  src = _folder(tmp_path, "s", [latent_record(3, "scene")])
  path = os.path.join(src, "scene", folder.SCENE_JSON)
  with open(path) as f:
    meta = json.load(f)
  meta["shots"][0]["prompt"] = "[SHOT CUT] " + meta["shots"][0]["prompt"]
  meta["shots"][0].pop("has_cut")
  for shot in meta["shots"][1:]:
    shot["prompt"] = shot["prompt"].replace("[SHOT CUT] ", "")
    shot.pop("has_cut")
  with open(path, "w") as f:
    json.dump(meta, f)
  record = folder.read_scene(src, "scene")
  assert record["has_cut"].tolist() == [True] + [False] * (
      len(meta["shots"]) - 1)


def test_example_folder_builds(tmp_path):
  built = builders.build_folder(os.path.join(EXAMPLE, "pixels"),
                                str(tmp_path / "px"))
  record = builders.open_split(built, "train")[0]
  assert record["scene_id"] == "cut_scene_026"
  assert record["has_cut"].tolist() == [True, True]      # from the prefix
  want = scene_to_record(generate_scene(26, max_shots=2, max_frames=4))
  np.testing.assert_array_equal(record["frames"], want["frames"])

  src = os.path.join(EXAMPLE, "latents")
  built = builders.build_folder(src, str(tmp_path / "lat"))
  record = builders.open_split(built, "train")[0]
  assert record["has_cut"].tolist() == [False, False]
  shot = np.load(os.path.join(src, "continuous_take_000", "shot_01.npy"))
  np.testing.assert_array_equal(record["latents"][:len(shot)], shot)


# Each case breaks scene "bad" of a folder that also holds two good scenes.
def _edit_json(edit):
  def apply(scene_dir):
    path = os.path.join(scene_dir, folder.SCENE_JSON)
    with open(path) as f:
      meta = json.load(f)
    edit(meta)
    with open(path, "w") as f:
      json.dump(meta, f)
  return apply


def _write(name, data):
  def apply(scene_dir):
    with open(os.path.join(scene_dir, name), "wb") as f:
      f.write(data)
  return apply


def _truncate(name):
  def apply(scene_dir):
    path = os.path.join(scene_dir, name)
    with open(path, "rb") as f:
      data = f.read()
    _write(name, data[:len(data) // 2])(scene_dir)
  return apply


def _odd_shape(scene_dir):
  first = np.load(os.path.join(scene_dir, "shot_01.npy"))
  np.save(os.path.join(scene_dir, "shot_02.npy"), first[:, :2])


def _to_video(meta):
  meta["shots"][1].pop("latents")
  meta["shots"][1]["video"] = "v.mp4"


def _mixed_kinds(scene_dir):
  folder.write_video(os.path.join(scene_dir, "v.mp4"),
                     np.zeros((2, 16, 16, 3), np.uint8))
  _edit_json(_to_video)(scene_dir)


BAD_CASES = {
    "missing file": (lambda d: os.remove(os.path.join(d, "shot_02.npy")),
                     "missing file shot_02.npy"),
    "missing json": (lambda d: os.remove(os.path.join(d, "scene.json")),
                     "missing file scene.json"),
    "corrupt npy": (_write("shot_01.npy", b"\x93NUMPY garbage"),
                    "cannot read shot_01.npy"),
    "corrupt video": (_write("shot_01.mp4", b"\x00\x00\x00\x18ftypmp42 cut"),
                      "cannot read shot_01.mp4"),
    "truncated video": (_truncate("shot_02.mp4"), "cannot read shot_02.mp4"),
    "truncated npy": (_truncate("shot_02.npy"), "cannot read shot_02.npy"),
    "inconsistent shape": (_odd_shape, "frame shape"),
    "mixed kinds": (_mixed_kinds, "mix videos and latents"),
    "empty scene": (_edit_json(lambda m: m.update(shots=[])), "empty scene"),
    "invalid json": (_write("scene.json", b'{"global_prompt": '),
                     "invalid JSON"),
}


@pytest.fixture
def bad_folder(tmp_path, request):
  """A latents folder (pixels for the video cases) with one bad scene.

  Scene "bad" comes from seed 5, which has 3 shots (cases need >= 2).
  """
  case = request.param
  if "video" in case:
    records = [pixel_record(3), pixel_record(8), pixel_record(5, "bad")]
  else:
    records = [latent_record(3, "good_1"), latent_record(4, "good_2"),
               latent_record(5, "bad")]
  src = _folder(tmp_path, "src", records)
  break_scene, message = BAD_CASES[case]
  break_scene(os.path.join(src, "bad"))
  return src, message


@pytest.mark.parametrize("bad_folder", sorted(BAD_CASES), indirect=True)
def test_bad_scene_is_named_or_skipped(tmp_path, bad_folder):
  src, message = bad_folder
  with pytest.raises(BadRecordError, match=f"'bad'.*{message}") as err:
    folder.read_scene(src, "bad")
  assert err.value.scene_id == "bad"
  kind = "pixels" if message.endswith("mp4") else "latents"
  with pytest.raises(BadRecordError, match="'bad'"):
    builders.build_folder(src, str(tmp_path / "stop"), kind)
  # A failed build leaves no dataset behind to be mistaken for a good one.
  assert not os.path.exists(tmp_path / "stop" / "scene_folder" / kind /
                            "1.0.0")
  built = builders.build_folder(src, str(tmp_path / "skip"), kind,
                                skip_bad_records=True)
  source = builders.open_split(built, "train")
  assert len(source) == 2 and "bad" not in {r["scene_id"] for r in source}
  assert built.skipped == {"train": 1}
  # The count is stored with the dataset, for whoever reads it later.
  reread = builders.SceneFolder(data_dir=str(tmp_path / "skip"), config=kind)
  assert builders.skipped_records(reread) == {"train": 1}


def test_wrong_kind_for_the_dataset(tmp_path):
  src = _folder(tmp_path, "s", [latent_record(3, "lat")])
  with pytest.raises(BadRecordError, match="'lat'.*holds latents"):
    builders.build_folder(src, str(tmp_path / "d"), "pixels")


class _Truncated(builders.SyntheticScenes):
  """Writes scene 1 with frames missing: a record that fails on reading."""

  def _generate_examples(self, split, first_seed, count):
    for i, record in super()._generate_examples(split, first_seed, count):
      if i == 1:
        record["frames"] = record["frames"][:0]
      yield i, record


def test_bad_record_is_named_when_read(tmp_path):
  builder = _Truncated(data_dir=str(tmp_path),
                       config=builders.synthetic_config(3, 0, **LIMITS))
  builder.download_and_prepare()
  source = builders.open_split(builder, "train")
  source[0]
  with pytest.raises(BadRecordError, match="synthetic-00000001.*frames"):
    source[1]


def test_truncated_file_is_named_when_read(tmp_path):
  config = builders.synthetic_config(3, 0, **LIMITS)
  builder = builders.build_synthetic(str(tmp_path), 3, 0, **LIMITS)
  (path,) = [os.path.join(builder.data_dir, f)
             for f in os.listdir(builder.data_dir) if "-train." in f]
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:len(data) // 2])
  source = builders.open_split(
      builders.SyntheticScenes(data_dir=str(tmp_path), config=config),
      "train")
  with pytest.raises(BadRecordError, match=r"train\[0\]'.*cannot decode"):
    source[0]


def test_cli_synthetic(tmp_path):
  out = subprocess.run(
      [sys.executable, os.path.join(REPO, "data", "build.py"), "synthetic",
       "--data_dir", str(tmp_path), "--num_scenes", "3", "--num_validation",
       "1", "--max_shots", "2", "--max_frames", "2"],
      capture_output=True, text=True, check=True, cwd=REPO)
  assert "{'train': 3, 'validation': 1}" in out.stdout
  builder = builders.SyntheticScenes(
      data_dir=str(tmp_path), config=builders.synthetic_config(
          3, 1, max_shots=2, max_frames=2))
  assert len(builders.open_split(builder, "validation")) == 1


def test_cli_folder(tmp_path, capsys):
  # Loaded by path: data/ is not a package, and "build" is a PyPI name.
  spec = importlib.util.spec_from_file_location(
      "lct_data_build", os.path.join(REPO, "data", "build.py"))
  build = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(build)
  src = str(tmp_path / "src")
  shutil.copytree(os.path.join(EXAMPLE, "latents"), src)
  assert build.main(["folder", "--src", src, "--data_dir",
                     str(tmp_path / "d")]) == 0
  assert "scene_folder/latents" in capsys.readouterr().out
