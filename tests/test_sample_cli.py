"""sample.py end to end on a tiny checkpoint, and its bad-input errors.

The work directory is written in-process (an initial train state saved with
the training loop's Checkpointer and a config.json, as train.py leaves
them) so that no training step has to compile here.
"""
import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from lct_jax import configlib
from lct_jax.sampling import load, scene_file
from lct_jax.training.checkpoint import CheckpointError
from tests._util import write_workdir

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "tests" / "configs" / "tiny_run.py")
PROMPT = "Character 1 is a large red circle on a checkered teal background."


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  wd = tmp_path_factory.mktemp("run")
  c = configlib.load(CONFIG)
  return wd, c, write_workdir(wd, c)


def write_scene(path, **spec):
  spec.setdefault("global_prompt", PROMPT)
  path.write_text(json.dumps(spec))
  return str(path)


def run_sample(*args, devices=1):
  flags = (f"--xla_force_host_platform_device_count={devices}"
           if devices > 1 else "")
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags,
             PYTHONPATH=str(ROOT))
  return subprocess.run([sys.executable, str(ROOT / "sample.py"),
                         "--noprogress", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def test_joint_sampling_writes_everything(workdir, tmp_path):
  wd, c, _ = workdir
  given = np.random.default_rng(0).uniform(
      -1, 1, (2, 16, 16, 3)).astype(np.float32)
  np.save(tmp_path / "first.npy", given)
  scene = write_scene(
      tmp_path / "s.json", steps=2, guidance=2.0, shots=[
          {"prompt": "[SHOT CUT] wide shot, Character 1 moves right.",
           "condition": "first.npy"},
          {"prompt": "[SHOT CUT] close shot, Character 1 stays still.",
           "frames": 1}])
  out = tmp_path / "out"
  proc = run_sample(f"--workdir={wd}", f"--scene={scene}", "--mode=joint",
                    f"--out={out}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  for name in ("scene.mp4", "scene.gif", "scene_contact.png",
               "shot_00.mp4", "shot_01.gif", "shot_01.png", "shot_01.npy"):
    assert (out / name).stat().st_size > 0, name
  # The condition comes back bit-identical.
  assert np.load(out / "shot_00.npy").tobytes() == given.tobytes()
  assert np.load(out / "shot_01.npy").shape == (1, 16, 16, 3)
  settings = json.loads((out / "settings.json").read_text())
  assert settings["mode"] == "joint" and settings["steps"] == 2
  assert settings["weights"] == "ema" and settings["shots"][0]["condition"]
  assert set(settings["consistency"]["consistency"]) == {
      "shape", "sprite_color", "size", "background_color", "texture", "tint"}
  assert 0.0 <= settings["consistency"]["recognised"] <= 1.0
  assert settings["consistency"]["consistency_chance"]["tint"] == (
      pytest.approx(1 / 3))
  import av  # the MP4 decodes to the frames it should hold
  with av.open(str(out / "scene.mp4")) as f:
    assert len(list(f.decode(video=0))) == 3


def test_sampling_on_a_mesh_equals_one_device(workdir, tmp_path):
  """sample.py --mesh on 4 devices (params over fsdp, tokens over context)
  writes the latents one device computes in-process."""
  from lct_jax.sampling import Sampler  # pylint: disable=g-import-not-at-top
  wd, _, _ = workdir
  scene = write_scene(
      tmp_path / "s.json", steps=2, guidance=2.0, shots=[
          {"prompt": "[SHOT CUT] wide shot, Character 1 moves right."},
          {"prompt": "[SHOT CUT] close shot, Character 1 stays still.",
           "frames": 1}])
  out = tmp_path / "out"
  proc = run_sample(f"--workdir={wd}", f"--scene={scene}", "--mode=joint",
                    f"--out={out}", "--mesh=fsdp=2,context=2", devices=4)
  assert proc.returncode == 0, proc.stderr[-3000:]
  config, graphdef, params, _ = load.load_model(str(wd))
  sc, _ = scene_file.load(scene, config, max_shots=config.scene.max_shots)
  ref = Sampler(config, graphdef, params, steps=2, shift=config.sample.shift,
                cfg_scale=2.0, t_c=config.sample.t_c).joint(sc)
  for i, r in enumerate(ref):
    got = np.load(out / f"shot_{i:02d}.npy")
    assert np.max(np.abs(got - r[:got.shape[0]])) <= 1e-5 * np.max(np.abs(r))
  # A mesh the devices cannot hold is refused before the model loads.
  proc = run_sample(f"--workdir={wd}", f"--scene={scene}", f"--out={out}",
                    "--mesh=context=3", devices=4)
  assert proc.returncode == 1
  assert "--mesh: mesh" in proc.stderr and "4 are available" in proc.stderr


def test_cli_errors_name_the_field(workdir, tmp_path):
  wd, _, _ = workdir
  scene = write_scene(tmp_path / "s.json", shots=[{"prompt": "wide shot."}], colour=1)
  proc = run_sample(f"--workdir={wd}", f"--scene={scene}")
  assert proc.returncode == 1 and "unknown key(s) ['colour']" in proc.stderr
  proc = run_sample(f"--workdir={tmp_path}", f"--scene={scene}")
  assert proc.returncode == 1 and "config.json" in proc.stderr


@pytest.mark.parametrize("spec, shape, match", [
    (dict(shots=[{"prompt": "wide shot.", "speed": 2}]), None, r"shots\[0\].*'speed'"),
    (dict(shots=[{"prompt": "wide shot."}] * 3), None, "3 shots.*max_shots=2"),
    (dict(t_c=1200, shots=[{"prompt": "wide shot."}]), None, r"t_c=1200.*\[0, 1000\]"),
    (dict(shots=[{"prompt": "wide shot.", "t_c": -1}]), None, r"shots\[0\].t_c"),
    (dict(shots=[{"prompt": "wide shot.", "condition": "m.npy"}]), (2, 8, 8, 3),
     r"shots\[0\].condition.*m.npy.*8x8.*16x16"),
    (dict(shots=[{"prompt": "wide shot.", "condition": "m.npy"}]), (2, 16, 16, 4),
     r"shots\[0\].condition.*4 latent channels.*in_channels=3"),
    (dict(shots=[{"prompt": "wide shot.", "condition": "m.npy"}]), (3, 16, 16, 3),
     "3 frames, more than scene.frames=2"),
    (dict(shots=[{"prompt": "wide shot.", "condition": "nope.mp4"}]), None,
     r"shots\[0\].condition.*does not exist"),
    (dict(shots=[{"prompt": "wide shot."}, {"prompt": "close shot.", "history": [1]}]), None,
     r"shots\[1\].history"),
    (dict(shots=[{"prompt": "wide shot, Character 1 dances wildly."}]), None,
     r"shots\[0\].prompt.*vocabulary: \['dances', 'wildly'\]"),
])
def test_bad_scene_files(workdir, tmp_path, spec, shape, match):
  _, c, state = workdir
  if shape is not None:
    np.save(tmp_path / "m.npy", np.zeros(shape, np.float32))
  path = write_scene(tmp_path / "bad.json", **spec)
  with pytest.raises(scene_file.SceneFileError, match=match) as e:
    scene_file.load(path, c, max_shots=c.scene.max_shots)
  assert "bad.json" in str(e.value)


def test_workdir_without_checkpoint(workdir, tmp_path):
  _, c, state = workdir
  (tmp_path / "config.json").write_text(c.to_json_best_effort())
  with pytest.raises(CheckpointError, match="no checkpoint"):
    load.load_model(str(tmp_path))


def test_example_scene_files_parse():
  c = configlib.load(str(ROOT / "configs" / "demo.py"))
  for path in sorted((ROOT / "scenes").glob("*.json")):
    if path.name == "composition.json":
      pytest.importorskip("PIL")
    scene, _ = scene_file.load(str(path), c, max_shots=c.scene.max_shots)
    assert scene.shots, path


def test_a_longer_condition_is_cut_to_the_shot_frames(tmp_path):
  """"frames" below a condition's length conditions on its first frames
  (the demo's 2-frame shots, given a 4-frame example clip)."""
  c = configlib.load(str(ROOT / "configs" / "demo.py"))
  clip = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype(
      np.float32)
  np.save(tmp_path / "clip.npy", clip)
  shot = {"prompt": "[SHOT CUT] wide shot, Character 1 moves left.",
          "condition": "clip.npy"}
  path = write_scene(tmp_path / "s.json", shots=[dict(shot, frames=2)])
  scene, _ = scene_file.load(path, c)
  assert scene.shots[0].num_frames == 2
  np.testing.assert_array_equal(scene.shots[0].latents, clip[:2])
  path = write_scene(tmp_path / "t.json", shots=[shot])
  with pytest.raises(scene_file.SceneFileError, match="4 frames, more than "
                     "scene.frames=2; set the shot's \"frames\""):
    scene_file.load(path, c)


def test_train_writes_periodic_samples(tmp_path):
  """train.py --config.train.sample_every: the loop's hook end to end."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="",
             PYTHONPATH=str(ROOT))
  proc = subprocess.run(
      [sys.executable, str(ROOT / "train.py"), f"--config={CONFIG}",
       f"--workdir={tmp_path}", "--noprogress", "--config.train.steps=2",
       "--config.train.sample_every=2", "--config.sample.steps=1"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = tmp_path / "samples" / "2"
  settings = json.loads((out / "settings.json").read_text())
  n = len(settings["prompts"])
  assert settings["step"] == 2 and settings["mode"] == "joint" and n >= 1
  assert (out / f"shot_{n - 1:02d}.gif").exists()
  assert (out / "scene_contact.png").exists()
  assert "consistency" in settings


def test_evaluate_held_out_scenes(workdir, tmp_path):
  """The evaluation entry point end to end on the (untrained) tiny run:
  its noise is not recognised, and the table carries the chance levels."""
  from lct_jax import evaluate  # pylint: disable=g-import-not-at-top
  wd, c, _ = workdir
  lines = []
  table = evaluate.evaluate(str(wd), scenes=2, steps=1, guidance=1.0,
                            out=str(tmp_path / "eval"), log=lines.append)
  assert table["scenes"] == 2 and table["shots"] >= 4
  assert table["recognised"] == 0.0
  assert set(table["consistency_chance"]) == set(table["consistency"])
  assert "recognised shots: 0.000" in lines[0] and "chance" in lines[0]
  saved = json.loads((tmp_path / "eval" / "eval.json").read_text())
  assert saved["recognised"] == 0.0
  by_motion = saved["recognised_by"]["motion"]
  assert sum(g["shots"] for g in by_motion.values()) == table["shots"]
  assert "recognised by motion:" in lines[0]
  assert (tmp_path / "eval" / "scene_00.png").stat().st_size > 0
  # Held-out: no training pool reaches the held-out seeds.
  seeds = {int(s.scene_id.split("-")[1])
           for s in evaluate.held_out_scenes(c, 2)}
  assert min(seeds) >= evaluate.HELD_OUT_SEED > c.data.num_scenes


def test_evaluate_alone_samples_each_shot_without_the_others(workdir,
                                                           monkeypatch):
  """--alone: shot k is what joint sampling gives for the scene cut to that
  one shot (the same prompts and seed), and differs from shot k sampled
  jointly with the others (the random model's attention mixes shots)."""
  from lct_jax import evaluate  # pylint: disable=g-import-not-at-top
  wd, _, _ = workdir
  c, sampler, _ = evaluate.load_sampler(str(wd), steps=2, guidance=1.0)
  drawn = evaluate.held_out_scenes(c, 1)[0]
  assert len(drawn.shots) >= 2
  _, alone = next(evaluate.generate_held_out(c, sampler, 1, mode="alone"))
  _, joint = next(evaluate.generate_held_out(c, sampler, 1))
  monkeypatch.setattr(evaluate, "held_out_scenes", lambda *_, **__: [
      dataclasses.replace(drawn, shots=drawn.shots[:1])])
  _, cut = next(evaluate.generate_held_out(c, sampler, 1))
  np.testing.assert_array_equal(alone[0], cut[0])
  assert len(alone) == len(joint) == len(drawn.shots)
  assert not np.array_equal(alone[0], joint[0])


def test_held_out_truth_is_the_drawn_scene_and_its_noise(workdir):
  """What the denoising benchmarks start from: scene i's true frames as
  latents (padding zero) and shot k's starting noise from seed 1000 i + k,
  the rule `generate_held_out` documents."""
  from lct_jax import evaluate  # pylint: disable=g-import-not-at-top
  from lct_jax.sampling import media  # pylint: disable=g-import-not-at-top
  from lct_jax.sampling.sampler import shot_noise  # pylint: disable=g-import-not-at-top
  wd, _, _ = workdir
  c, sampler, _ = evaluate.load_sampler(str(wd), steps=2, guidance=1.0)
  drawn = evaluate.held_out_scenes(c, 2)[1]
  batch, x, eps = evaluate.held_out_truth(c, sampler, drawn, 1)
  assert x.shape == eps.shape == (1, c.scene.max_shots) + sampler.shot_shape
  for k, shot in enumerate(drawn.shots):
    f = len(shot.frames)
    np.testing.assert_array_equal(media.to_frames(x[0, k], f), shot.frames)
    assert not x[0, k, f:].any()
    np.testing.assert_array_equal(
        eps[0, k], shot_noise(1000 + k, sampler.shot_shape)[0])
  assert not x[0, len(drawn.shots):].any()
  assert (batch["num_frames"][0, :len(drawn.shots)]
          == [len(s.frames) for s in drawn.shots]).all()


def test_held_out_scenes_of_a_single_shot_run():
  """A max_shots = 1 run (the text_rope stage) gets one-shot held-out
  scenes; it used to search forever for scenes of >= 2 shots."""
  from lct_jax import evaluate  # pylint: disable=g-import-not-at-top
  root = pathlib.Path(__file__).resolve().parents[1]
  c = configlib.load(str(root / "configs" / "demo.py") + ":text_rope")
  assert c.scene.max_shots == 1
  scenes = evaluate.held_out_scenes(c, 3)
  assert [len(s.shots) for s in scenes] == [1, 1, 1]


def test_evaluate_refuses_runs_not_on_synthetic_scenes(workdir, tmp_path):
  from lct_jax import evaluate  # pylint: disable=g-import-not-at-top
  wd, c, _ = workdir
  saved = json.loads((wd / "config.json").read_text())
  saved["data"]["source"] = "scene_folder"
  (tmp_path / "config.json").write_text(json.dumps(saved))
  with pytest.raises(ValueError, match="not trained on the synthetic"):
    evaluate.evaluate(str(tmp_path), scenes=1)


def test_load_model_of_a_given_step(workdir):
  """`evaluate --step` / `load_model(step=)`: that checkpoint's weights, and
  a step that was never saved is an error naming the ones there are."""
  wd, c, state = workdir
  _, _, params, step = load.load_model(str(wd), step=0, config=c)
  assert step == 0
  np.testing.assert_array_equal(
      jax.tree.leaves(params)[0], jax.tree.leaves(state.ema_params)[0])
  with pytest.raises(CheckpointError, match=r"no checkpoint of step 7 .*has: 0"):
    load.load_model(str(wd), step=7, config=c)
