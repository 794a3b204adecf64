"""The paper-claim experiments (`lct_jax.experiments`): their input checks,
and that each row is what it says, judged against the generator's truth.

Work directories are written in-process (initial states, no training); the
tiny model's samples are noise, so the row bookkeeping is checked with the
generator's own shots fed through the same scoring instead.
"""
import importlib.util
import json
import pathlib

import numpy as np
import pytest

from lct_jax import configlib, evaluate
from lct_jax.experiments import scene_context
from tests._util import write_workdir

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "tests" / "configs" / "tiny_run.py")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """-> (scene-stage workdir, single-shot workdir), the same tiny weights."""
  out = []
  for stage in ("lct", "text_rope"):
    wd = tmp_path_factory.mktemp(stage)
    write_workdir(wd, configlib.load(f"{CONFIG}:{stage}"))
    out.append(str(wd))
  return tuple(out)


def test_inputs_are_checked_before_sampling(runs, monkeypatch):
  lct, single = runs
  def no_sampling(*_, **__):
    raise AssertionError("sampled before checking its inputs")
  monkeypatch.setattr(evaluate, "load_sampler", no_sampling)
  with pytest.raises(ValueError, match="--lct must be a bidirectional scene"):
    scene_context.run(single, single)
  with pytest.raises(ValueError, match="--single must be a single-shot"):
    scene_context.run(lct, lct)
  with pytest.raises(ValueError, match="--scenes must be >= 32"):
    scene_context.run(lct, single, scenes=31)
  with pytest.raises(ValueError, match="--seeds must be >= 2"):
    scene_context.run(lct, single, seeds=1)
  with pytest.raises(SystemExit, match="--single .*has no config.json"):
    scene_context.main(["--lct", lct, "--single", lct + "-missing"])


def test_rows_and_spread_against_the_generators_truth(runs, tmp_path,
                                                     monkeypatch):
  """Each row samples what it says (the LCT run jointly, the LCT run shot by
  shot, the single-shot run shot by shot on the LCT run's scenes). Fed the
  generator's own shots for `joint` and shots of other scenes for the
  controls, the joint row's consistency is 1 for every factor and the
  controls' tint consistency is at chance; means and spreads are those of
  the per-seed tables."""
  del runs
  # The shipped pair (32x32, where every factor decodes exactly); config.json
  # only, as sampling is replaced below.
  lct, single = (tmp_path / "lct", tmp_path / "single")
  for wd, name in ((lct, "demo_long.py:lct"),
                   (single, "demo_long.py:single_control")):
    wd.mkdir()
    config = configlib.load(str(ROOT / "configs" / name))
    (wd / "config.json").write_text(config.to_json_best_effort(indent=1))
  lct, single = str(lct), str(single)
  calls = []

  def fake_generate(config, sampler, count, *, alone, seed_set, max_shots):
    calls.append((config.scene.max_shots, sampler.tag, alone, seed_set,
                  max_shots))
    drawn = evaluate.held_out_scenes(config, count, seed_set=seed_set,
                                     max_shots=max_shots)
    for i, scene in enumerate(drawn):
      if not alone:
        frames = [s.frames for s in scene.shots]
      else:   # shot k of another scene: no context shared
        frames = [drawn[(i + 1 + k) % count].shots[0].frames
                  for k in range(len(scene.shots))]
      yield scene, frames

  class Tagged:
    def __init__(self, tag):
      self.tag, self.cfg_scale, self.eta = tag, 1.0, 1.0
      self.ts = np.zeros(3)

  def fake_load_sampler(workdir, steps=None):
    config = scene_context.load.load_config(workdir)
    return config, Tagged("lct" if workdir == lct else "single"), 7

  monkeypatch.setattr(evaluate, "generate_held_out", fake_generate)
  monkeypatch.setattr(evaluate, "load_sampler", fake_load_sampler)
  lines = []
  result = scene_context.run(lct, single, scenes=32, seeds=2,
                             log=lines.append)
  assert calls == [(4, "lct", False, 0, 4), (4, "lct", True, 0, 4),
                   (1, "single", True, 0, 4), (4, "lct", False, 1, 4),
                   (4, "lct", True, 1, 4), (1, "single", True, 1, 4)]
  joint = result["rows"]["joint"]
  for f in ("tint", "shape", "sprite_color", "background_color"):
    assert joint[f"consistency/{f}"] == (1.0, 0.0)
  for row in ("alone", "single"):
    s = result["rows"][row]
    tint, chance = s["consistency/tint"][0], s["chance/tint"][0]
    assert abs(tint - chance) < 0.15, (row, tint, chance)
    per_seed = [t["consistency"]["tint"] for t in result["per_seed"][row]]
    assert s["consistency/tint"] == pytest.approx(
        (np.mean(per_seed), np.std(per_seed, ddof=1)))
  assert joint["recognised"][0] == 1.0
  assert "tint (no prompt)" in lines[-1] and "(0." in lines[-1]


def test_end_to_end_writes_table_json_and_plot(runs, tmp_path, monkeypatch):
  """The real samplers on the tiny runs: the command runs through and
  writes what it says (the PNG where matplotlib, the `bench` extra, is
  installed). Noise is not recognised in any row."""
  lct, single = runs
  monkeypatch.setattr(scene_context, "MIN_SCENES", 2)
  args = ["--lct", lct, "--single", single, "--scenes", "2", "--seeds", "2",
          "--steps", "1", "--json", str(tmp_path / "r.json"),
          "--out", str(tmp_path / "sheets")]
  plots = importlib.util.find_spec("matplotlib") is not None
  if plots:
    args += ["--png", str(tmp_path / "r.png")]
  scene_context.main(args)
  saved = json.loads((tmp_path / "r.json").read_text())
  assert set(saved["rows"]) == {"joint", "alone", "single"}
  for row in saved["rows"].values():
    assert row["recognised"][0] == 0.0
  assert saved["scenes"] == 2 and len(saved["per_seed"]["single"]) == 2
  assert sorted(p.name for p in (tmp_path / "sheets").iterdir()) == [
      f"{r}_scene_{i}.png" for r in ("alone", "joint", "single")
      for i in range(2)]
  if plots:
    assert (tmp_path / "r.png").stat().st_size > 0
