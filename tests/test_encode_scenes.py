"""Encoding a folder of real videos for a latent-space model
(`lct_jax.data.encode_scenes`, `data/build.py folder --vae`): the 1 + 4k
frame rule, resuming, skipping bad videos by name, and the built dataset."""
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from lct_jax import vae as V
from lct_jax.convert.vae import save_checkpoint
from lct_jax.data import builders, encode_scenes, folder, records
from lct_jax.data.text_encoder import HashedTextEncoder
from lct_jax.data.transform import pixels_to_latents

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny_vae():
  """3 blocks: 4x in space, 4x in time (F = 1 + 4k -> 1 + k)."""
  config = V.VAEConfig(block_out_channels=(8, 8, 8), layers_per_block=1,
                       down_block_types=(V.config.DOWN_BLOCK,) * 3,
                       up_block_types=(V.config.UP_BLOCK,) * 3,
                       latent_channels=4, norm_num_groups=4,
                       spatial_compression_ratio=4)
  assert (config.spatial_factor, config.temporal_factor) == (4, 4)
  return V.init(config, seed=0)


def _video(num_frames, h=18, w=22, seed=0):
  return np.random.default_rng(seed).integers(
      0, 256, (num_frames, h, w, 3), np.uint8)


def _scene(src, scene_id, frame_counts, *, corrupt=None):
  d = os.path.join(src, scene_id)
  os.makedirs(d)
  shots = []
  for k, n in enumerate(frame_counts):
    name = f"s{k}.mp4"
    if k == corrupt:
      with open(os.path.join(d, name), "wb") as f:
        f.write(b"not a video")
    else:
      folder.write_video(os.path.join(d, name), _video(n, seed=k))
    shots.append({"prompt": f"shot {k} of {scene_id}", "video": name})
  with open(os.path.join(d, "scene.json"), "w") as f:
    json.dump({"global_prompt": f"a scene {scene_id}", "shots": shots}, f)


def test_kept_frames_follow_the_vae_rule():
  # 1 + 4k, k as large as the video allows; a single frame is an image.
  assert [encode_scenes.kept_frames(n, 4) for n in (1, 5, 8, 9, 12, 13)] == [
      1, 5, 5, 9, 9, 13]
  for n in (2, 3, 4):
    with pytest.raises(ValueError, match=f"{n} frames is too short"):
      encode_scenes.kept_frames(n, 4)


def test_encode_folder_cuts_skips_and_resumes(tmp_path, tiny_vae):
  src, dst = str(tmp_path / "src"), str(tmp_path / "enc")
  _scene(src, "a_ok", [11, 1])            # 11 -> 9 frames; an image shot
  _scene(src, "b_short", [9, 3])          # 3 frames: too short
  _scene(src, "c_corrupt", [5, 5], corrupt=1)
  _scene(src, "d_ok", [5])
  text = HashedTextEncoder(dim=6, pooled_dim=3)
  enc = encode_scenes.SceneEncoder(tiny_vae, text, sources={"vae": "tiny"})
  report = encode_scenes.encode_folder(src, dst, enc, progress=False)
  assert report.written == ["a_ok", "d_ok"]
  assert sorted(report.skipped) == ["b_short", "c_corrupt"]
  assert "shot 1 (s1.mp4): 3 frames is too short" in report.skipped["b_short"]
  assert "s1.mp4" in report.skipped["c_corrupt"]
  assert sorted(os.listdir(dst)) == ["a_ok", "d_ok",
                                     encode_scenes.REPORT]

  record = folder.read_scene(dst, "a_ok")
  assert record["shot_num_frames"].tolist() == [3, 1]   # 1 + 8/4, 1
  notes = json.loads(record["encoding_json"])
  assert [(s["source_frames"], s["frames"]) for s in notes["shots"]] == [
      (11, 9), (1, 1)]
  assert notes["shots"][0]["size"] == [16, 20]          # centre crop to 4s
  # The latents are the VAE's of the first 9 frames, centre-cropped.
  frames = folder.read_video(os.path.join(src, "a_ok", "s0.mp4"))[:9, 1:17, 1:21]
  want = V.to_latents(tiny_vae, jnp.asarray(pixels_to_latents(frames))[None])
  got = records.split_shots(record)[0]
  np.testing.assert_allclose(got, np.asarray(want[0], np.float16), rtol=0,
                             atol=0)
  # Text embeddings of every group, as the text encoder gives them.
  groups = records.split_embeddings(record)
  np.testing.assert_array_equal(groups[0], text("a scene a_ok")[0])
  assert record[records.POOLED].shape == (3, 3)

  # A rerun skips the finished scenes (their files untouched) and cleans a
  # partial scene left by an interrupted run.
  stamp = os.path.getmtime(os.path.join(dst, "a_ok", "shot_01.npy"))
  os.makedirs(os.path.join(dst, encode_scenes.TMP_PREFIX + "e_new"))
  _scene(src, "e_new", [5])
  again = encode_scenes.encode_folder(src, dst, enc, progress=False)
  assert again.already_done == ["a_ok", "d_ok"]
  assert again.written == ["e_new"]
  assert os.path.getmtime(os.path.join(dst, "a_ok", "shot_01.npy")) == stamp
  assert not any(n.startswith(encode_scenes.TMP_PREFIX)
                 for n in os.listdir(dst))


def test_an_interrupted_scene_is_never_half_written(tmp_path, tiny_vae):
  src, dst = str(tmp_path / "src"), str(tmp_path / "enc")
  _scene(src, "a", [5, 5])

  class Interrupt(Exception):
    pass

  calls = []

  def text(t):
    calls.append(t)
    if len(calls) == 2:
      raise Interrupt()
    return np.zeros((2, 4), np.float16), None

  enc = encode_scenes.SceneEncoder(tiny_vae, text)
  with pytest.raises(Interrupt):
    encode_scenes.encode_folder(src, dst, enc, progress=False)
  assert not os.path.exists(os.path.join(dst, "a"))     # only the partial
  calls.append("again")
  report = encode_scenes.encode_folder(src, dst, enc, progress=False)
  assert report.written == ["a"]


def test_size_option_and_bad_options(tiny_vae):
  with pytest.raises(ValueError, match="multiples of the VAE's spatial"):
    encode_scenes.SceneEncoder(tiny_vae, height=18, width=20)
  with pytest.raises(ValueError, match="both height and width"):
    encode_scenes.SceneEncoder(tiny_vae, height=16)
  with pytest.raises(ValueError, match="nothing to encode"):
    encode_scenes.SceneEncoder()
  enc = encode_scenes.SceneEncoder(tiny_vae, height=8, width=12)
  latents, cut = enc._latents(_video(5))      # pylint: disable=protected-access
  assert latents.shape == (2, 2, 3, 4) and cut["size"] == [8, 12]


def test_build_cli_encodes_then_builds(tmp_path, tiny_vae):
  src, data_dir = str(tmp_path / "src"), str(tmp_path / "data")
  _scene(src, "a", [9, 5])
  _scene(src, "b", [2])                   # too short: skipped, named
  ckpt = str(tmp_path / "vae_ckpt")
  save_checkpoint(ckpt, V.params_of(tiny_vae), tiny_vae.config)
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, "data", "build.py"), "folder",
       "--src", src, "--data_dir", data_dir, "--vae", ckpt],
      capture_output=True, text=True, check=True, cwd=ROOT).stdout
  assert "1 scenes encoded, 0 already there, 1 skipped" in out
  assert "skipped b: " in out and "too short" in out
  builder = builders.build_folder(os.path.join(data_dir, "encoded_scenes"),
                                  data_dir)
  (record,) = list(builders.open_split(builder, "train"))
  assert record["latents"].shape == (3 + 2, 4, 5, 4)
  assert json.loads(record["encoding_json"])["vae"] == ckpt
