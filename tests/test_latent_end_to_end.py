"""Real videos in, real videos out, in miniature: a tiny random VAE encodes a
folder of videos (`data/build.py folder --vae`), a tiny latent-space model
trains a few steps on the encoded scenes (`train.py`), and `sample.py
--vae` decodes what it samples to MP4 / GIF / contact sheets; the
interactive Director saves through the VAE the same way."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lct_jax import configlib
from lct_jax import vae as V
from lct_jax.convert.vae import save_checkpoint
from lct_jax.data import folder
from lct_jax.sampling import decode, load, outputs, scene_file
from lct_jax.sampling.interactive import Director
from lct_jax.sampling.sampler import Sampler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "tests", "configs", "tiny_run.py")
PROMPTS = ["Character 1 is a large red circle on a checkered teal background.",
           "[SHOT CUT] wide shot, Character 1 moves left.",
           "close shot, Character 1 stays still."]
ENV = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", PYTHONPATH=ROOT)


def tiny_vae(latent_channels=4):
  """4x in space and time: 5 frames of 16x16 -> 2 latent frames of 4x4."""
  config = V.VAEConfig(block_out_channels=(8, 8, 8), layers_per_block=1,
                       down_block_types=(V.config.DOWN_BLOCK,) * 3,
                       up_block_types=(V.config.UP_BLOCK,) * 3,
                       latent_channels=latent_channels, norm_num_groups=4,
                       spatial_compression_ratio=4)
  return V.init(config, seed=1)


def run(script, *args):
  proc = subprocess.run([sys.executable, os.path.join(ROOT, script), *args],
                        cwd=ROOT, env=ENV, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("latent_run")
  vae = tiny_vae()
  ckpt = str(tmp / "vae")
  save_checkpoint(ckpt, V.params_of(vae), vae.config)
  src, data_dir = str(tmp / "videos"), str(tmp / "data")
  rng = np.random.default_rng(0)
  for i in range(3):
    d = os.path.join(src, f"scene_{i}")
    os.makedirs(d)
    shots = []
    for k in range(2):
      folder.write_video(os.path.join(d, f"{k}.mp4"),
                         rng.integers(0, 256, (6, 16, 16, 3), np.uint8))
      shots.append({"prompt": PROMPTS[1 + k], "video": f"{k}.mp4"})
    with open(os.path.join(d, "scene.json"), "w") as f:
      json.dump({"global_prompt": PROMPTS[0], "shots": shots}, f)
  run("data/build.py", "folder", "--src", src, "--data_dir", data_dir,
      "--vae", ckpt)
  workdir = str(tmp / "run")
  run("train.py", f"--config={CONFIG}", f"--workdir={workdir}",
      "--noprogress", "--config.train.steps=2",
      "--config.data.source=scene_folder", f"--config.data.dir={data_dir}",
      "--config.data.folder_kind=latents", "--config.model.in_channels=4",
      "--config.model.patch=2", "--config.scene.height=4",
      "--config.scene.width=4", f"--config.sample.vae={ckpt}")
  return vae, ckpt, workdir, tmp


def _scene_file(tmp):
  path = str(tmp / "scene.json")
  with open(path, "w") as f:
    json.dump({"global_prompt": PROMPTS[0],
               "shots": [{"prompt": p, "frames": 2} for p in PROMPTS[1:]]}, f)
  return path


def test_sample_decodes_latents_to_video(trained, tmp_path):
  vae, ckpt, workdir, tmp = trained
  out = tmp_path / "out"
  # No --vae: the run's sample.vae (recorded at training) is used.
  run("sample.py", f"--workdir={workdir}", f"--scene={_scene_file(tmp)}",
      f"--out={out}", "--noprogress", "--steps=2")
  settings = json.loads((out / "settings.json").read_text())
  assert settings["vae"] == ckpt
  latents = np.load(out / "shot_00.npy")
  assert latents.shape == (2, 4, 4, 4)
  # The MP4 holds the VAE's decoding of the saved latents: 1 + 4 frames of
  # 16x16 (enlarged 8x for viewing), equal to decoding them here.
  want = decode.vae_decoder(vae)(latents, 2)
  assert want.shape == (5, 16, 16, 3)
  got = folder.read_video(str(out / "shot_00.mp4"))
  assert got.shape == (5, 128, 128, 3)
  # yuv420p H.264 at crf 12: close, not exact.
  assert np.abs(got[:, ::8, ::8].astype(int) - want).mean() < 12
  for name in ("shot_01.gif", "scene.mp4", "scene_contact.png"):
    assert (out / name).exists(), name

  # --vae of a VAE with other latents is refused by name before sampling.
  other = str(tmp_path / "vae8")
  v8 = tiny_vae(latent_channels=8)
  save_checkpoint(other, V.params_of(v8), v8.config)
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, "sample.py"), f"--workdir={workdir}",
       f"--scene={_scene_file(tmp)}", f"--out={tmp_path / 'x'}", f"--vae={other}",
       "--noprogress"], cwd=ROOT, env=ENV, capture_output=True, text=True,
      timeout=300)
  assert proc.returncode != 0
  assert "8 channels but model.in_channels=4" in proc.stderr


def test_director_saves_through_the_vae(trained, tmp_path):
  vae, _, workdir, _ = trained
  config, graphdef, params, _ = load.load_model(workdir)
  sampler = Sampler(config, graphdef, params, steps=2)
  d = Director(sampler, PROMPTS[0], mode="bidirectional_ar")
  d.accept(d.propose(PROMPTS[1], frames=2, seed=3))
  settings = d.save(str(tmp_path), vae=vae)
  assert settings["mode"] == "bidirectional_ar"
  want = decode.vae_decoder(vae)(d.takes[0].latents, 2)
  got = folder.read_video(str(tmp_path / "shot_00.mp4"))
  assert got.shape == (5, 128, 128, 3)                # decoded, enlarged
  assert np.abs(got[:, ::8, ::8].astype(int) - want).mean() < 12


def test_write_scene_uses_the_decoder(tmp_path):
  calls = []

  def fake(latents, n):
    calls.append((latents.shape, n))
    return np.zeros((1 + 4 * (n - 1), 8, 8, 3), np.uint8)

  class C:
    class data:   # pylint: disable=invalid-name
      source = "scene_folder"

    class model:  # pylint: disable=invalid-name
      in_channels, text_mode = 4, "embeddings"

  outputs.write_scene(str(tmp_path), [np.zeros((3, 2, 2, 4))], [2], {},
                      config=C, decode=fake)
  assert calls == [((3, 2, 2, 4), 2)]


def test_a_text_encoder_of_another_width_is_named(tmp_path):
  c = configlib.load(CONFIG)
  c.model.text_mode, c.model.text_embed_dim = "embeddings", 16
  c.model.use_pooled_text, c.model.pooled_dim = True, 8
  path = str(tmp_path / "s.json")
  with open(path, "w") as f:
    json.dump({"global_prompt": "a", "shots": [{"prompt": "b"}]}, f)
  wide = lambda text: (np.zeros((3, 32), np.float16), np.zeros(8, np.float16))
  with pytest.raises(scene_file.SceneFileError,
                     match=r"shape \(3, 32\), but model.text_embed_dim=16"):
    scene_file.load(path, c, text_encoder=wide)
  pooled = lambda text: (np.zeros((3, 16), np.float16), np.zeros(5))
  with pytest.raises(scene_file.SceneFileError, match="model.pooled_dim=8"):
    scene_file.load(path, c, text_encoder=pooled)
