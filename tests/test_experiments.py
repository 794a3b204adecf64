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
from lct_jax.data import synthetic as syn
from lct_jax.experiments import (autoregressive, capabilities,
                                 causal_adaptation, common, history_timestep,
                                 scene_context)
from lct_jax.sampling import load
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


def forbid_sampling(monkeypatch) -> None:
  """Any model load fails the test: inputs must be checked first."""
  def no_sampling(*_, **__):
    raise AssertionError("sampled before checking its inputs")
  monkeypatch.setattr(evaluate, "load_sampler", no_sampling)


def tiny_causal_run(tmp_path) -> pathlib.Path:
  """A tiny causal-stage workdir (initial weights, no training)."""
  causal = tmp_path / "causal"
  causal.mkdir()
  write_workdir(causal, configlib.load(f"{CONFIG}:causal"))
  return causal


def run_cli(module, flags, tmp_path, monkeypatch, *, sheets: bool) -> dict:
  """Runs an experiment's command on tiny runs (2 scenes, 2 seed sets, 1
  Euler step) -> its JSON; checks the PNG where matplotlib (the `bench`
  extra) is installed."""
  monkeypatch.setattr(common, "MIN_SCENES", 2)
  args = flags + ["--scenes", "2", "--seeds", "2", "--steps", "1",
                  "--json", str(tmp_path / "r.json")]
  if sheets:
    args += ["--out", str(tmp_path / "sheets")]
  plots = importlib.util.find_spec("matplotlib") is not None
  if plots:
    args += ["--png", str(tmp_path / "r.png")]
  module.main(args)
  if plots:
    assert (tmp_path / "r.png").stat().st_size > 0
  return json.loads((tmp_path / "r.json").read_text())


def test_inputs_are_checked_before_sampling(runs, monkeypatch):
  lct, single = runs
  forbid_sampling(monkeypatch)
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

  def fake_generate(config, sampler, count, *, mode, seed_set, max_shots,
                    **_):
    alone = mode == "alone"
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
    config = load.load_config(workdir)
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
  saved = run_cli(scene_context, ["--lct", lct, "--single", single],
                  tmp_path, monkeypatch, sheets=True)
  assert set(saved["rows"]) == {"joint", "alone", "single"}
  for row in saved["rows"].values():
    assert row["recognised"][0] == 0.0
  assert saved["scenes"] == 2 and len(saved["per_seed"]["single"]) == 2
  assert sorted(p.name for p in (tmp_path / "sheets").iterdir()) == [
      f"{r}_scene_{i}.png" for r in ("alone", "joint", "single")
      for i in range(2)]


# --- experiment 2: causal against bidirectional auto-regression -------------


def _config_only_runs(tmp_path, **names):
  """Workdirs holding only the shipped configs' config.json (sampling is
  replaced in the tests that use them)."""
  out = {}
  for key, name in names.items():
    wd = tmp_path / key
    wd.mkdir()
    config = configlib.load(str(ROOT / "configs" / name))
    (wd / "config.json").write_text(config.to_json_best_effort(indent=1))
    out[key] = str(wd)
  return out


class _FakeClock:
  """time.perf_counter for common.generate: advanced by the fake sampler."""

  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_autoregressive_inputs_are_checked_before_sampling(runs, tmp_path,
                                                          monkeypatch):
  lct, single = runs
  causal = tiny_causal_run(tmp_path)
  forbid_sampling(monkeypatch)
  with pytest.raises(ValueError, match="--causal must be a context-causal"):
    autoregressive.run(lct, lct)
  with pytest.raises(ValueError, match="--bidirectional must be a "
                                       "bidirectional scene-stage"):
    autoregressive.run(str(causal), str(causal))
  with pytest.raises(ValueError, match="--bidirectional must be"):
    autoregressive.run(str(causal), single)
  with pytest.raises(ValueError, match="--scenes must be >= 32"):
    autoregressive.run(str(causal), lct, scenes=8)
  with pytest.raises(SystemExit, match="--bidirectional .*has no config.json"):
    autoregressive.main(["--causal", str(causal), "--bidirectional",
                         lct + "-missing"])
  other = _config_only_runs(tmp_path, lct="demo_long.py:lct")["lct"]
  with pytest.raises(ValueError, match="differ in scene.max_shots"):
    autoregressive.run(str(causal), other)


def test_autoregressive_rows_fidelity_and_time_per_shot(tmp_path,
                                                        monkeypatch):
  """Each row samples its model in its mode; fed the generator's own shots
  for the AR rows and, for the joint row, shots of other scenes after the
  first, fidelity is 1 for every factor in the AR rows and at chance in the
  joint row; time per shot is what the (fake) sampler spent."""
  wds = _config_only_runs(tmp_path, lct="demo_long.py:lct",
                          causal="demo_long.py:causal")
  clock = _FakeClock()
  monkeypatch.setattr(common.time, "perf_counter", clock)
  seconds = {"joint": 0.25, "bidirectional_ar": 2.0, "causal": 0.5}
  calls = []

  def fake_generate(config, sampler, count, *, mode, seed_set, window=None,
                    **_):
    calls.append((sampler.tag, mode, seed_set))
    assert window is None                       # every earlier shot
    drawn = evaluate.held_out_scenes(config, count, seed_set=seed_set)
    for i, scene in enumerate(drawn):
      frames = [s.frames for s in scene.shots]
      if mode == "joint":                       # shots 1.. from elsewhere
        frames[1:] = [drawn[(i + k) % count].shots[0].frames
                      for k in range(1, len(frames))]
      clock.now += seconds[mode] * len(frames)
      yield scene, frames

  class Tagged:
    def __init__(self, tag):
      self.tag, self.cfg_scale, self.eta, self.t_c = tag, 1.5, 1.0, 0.3
      self.ts = np.zeros(31)

  def fake_load_sampler(workdir, steps=None):
    config = load.load_config(workdir)
    return config, Tagged("causal" if workdir == wds["causal"] else "bi"), 3

  monkeypatch.setattr(evaluate, "generate_held_out", fake_generate)
  monkeypatch.setattr(evaluate, "load_sampler", fake_load_sampler)
  lines = []
  result = autoregressive.run(wds["causal"], wds["lct"], scenes=32, seeds=2,
                              log=lines.append)
  warm = common.WARM_UP_SEED_SET
  assert calls == [("bi", "joint", warm), ("bi", "bidirectional_ar", warm),
                   ("causal", "causal", warm)] + [
                       (tag, mode, s) for s in (0, 1) for tag, mode in
                       (("bi", "joint"), ("bi", "bidirectional_ar"),
                        ("causal", "causal"))]
  rows = result["rows"]
  for r in ("bidirectional_ar", "causal"):
    for f in ("tint", "shape", "sprite_color", "background_color"):
      assert rows[r][f"fidelity/{f}"] == (1.0, 0.0)
    assert rows[r]["recognised"][0] == 1.0
  joint = rows["joint"]
  assert abs(joint["fidelity/tint"][0] - joint["fidelity_chance/tint"][0]) \
      < 0.15
  for r, s in seconds.items():
    assert rows[r]["seconds_per_shot"] == pytest.approx((s, 0.0))
  assert "4.00x the causal model's time" in lines[-1]


def test_autoregressive_end_to_end_on_tiny_runs(runs, tmp_path, monkeypatch):
  lct, _ = runs
  causal = tiny_causal_run(tmp_path)
  saved = run_cli(autoregressive,
                  ["--causal", str(causal), "--bidirectional", lct],
                  tmp_path, monkeypatch, sheets=True)
  assert set(saved["rows"]) == {"joint", "bidirectional_ar", "causal"}
  for row in saved["rows"].values():
    assert row["recognised"][0] == 0.0 and row["seconds_per_shot"][0] > 0
  assert len(list((tmp_path / "sheets").iterdir())) == 6


# --- experiment 3: the history timestep ---------------------------------------


def test_history_timestep_inputs_are_checked_before_sampling(runs, tmp_path,
                                                            monkeypatch):
  lct, _ = runs
  wds = _config_only_runs(tmp_path, causal="demo_long.py:causal")
  forbid_sampling(monkeypatch)
  with pytest.raises(ValueError, match="--causal must be a context-causal"):
    history_timestep.run(lct)
  with pytest.raises(ValueError, match="--shots must be >= 8"):
    history_timestep.run(wds["causal"], shots=4)
  with pytest.raises(ValueError, match=r"--t-c values must be in \[0, 1000\]"):
    history_timestep.run(wds["causal"], t_cs=(0, 0.3, 1500))
  with pytest.raises(ValueError, match=r"--window must be in \[1, 3\]"):
    history_timestep.run(wds["causal"], window=4)
  with pytest.raises(ValueError, match="--seeds must be >= 2"):
    history_timestep.run(wds["causal"], seeds=1)
  with pytest.raises(SystemExit, match="--causal .*has no config.json"):
    history_timestep.main(["--causal", lct + "-missing"])


def test_history_timestep_sweeps_t_c_with_drift_and_fidelity(tmp_path,
                                                            monkeypatch):
  """Each t_c loads the causal run with that history timestep (0-1000 ->
  0-1) and a cache for the whole rollout, and generates 8-shot scenes shot
  by shot with the window. Fed the generator's own shots at t_c 0 and, at
  t_c 900, shots of other scenes after the first, fidelity and drift are 1
  at the first and at chance at the second."""
  wds = _config_only_runs(tmp_path, causal="demo_long.py:causal")
  loads, calls = [], []

  class Tagged:
    def __init__(self, t_c):
      self.t_c, self.cfg_scale, self.eta = t_c, 1.5, 1.0
      self.ts = np.zeros(31)

  def fake_load_sampler(workdir, steps=None, t_c=None, capacity=None):
    loads.append((t_c, capacity))
    return load.load_config(workdir), Tagged(t_c), 5

  def fake_generate(config, sampler, count, *, mode, seed_set, max_shots,
                    min_shots, window):
    calls.append((sampler.t_c, mode, seed_set, max_shots, min_shots, window))
    drawn = evaluate.held_out_scenes(config, count, seed_set=seed_set,
                                     max_shots=max_shots, min_shots=min_shots)
    for i, scene in enumerate(drawn):
      frames = [s.frames for s in scene.shots]
      if sampler.t_c > 0.5:
        frames[1:] = [drawn[(i + k) % count].shots[k].frames
                      for k in range(1, len(frames))]
      yield scene, frames

  monkeypatch.setattr(evaluate, "load_sampler", fake_load_sampler)
  monkeypatch.setattr(evaluate, "generate_held_out", fake_generate)
  lines = []
  result = history_timestep.run(wds["causal"], t_cs=(0, 900), scenes=32,
                                seeds=2, log=lines.append)
  assert loads == [(0.0, 7), (0.9, 7)]
  warm = common.WARM_UP_SEED_SET
  assert calls == [(t, "causal", s, 8, 8, 3) for t in (0.0, 0.9)
                   for s in (warm, 0, 1)]
  clean, far = result["t_c"][0], result["t_c"][900]
  assert clean["fidelity_mean"] == (1.0, 0.0)
  assert [m for m, _ in clean["drift_mean"]] == [1.0] * 7
  assert [m for m, _ in clean["recognised_by_shot"]] == [1.0] * 8
  assert abs(far["fidelity/tint"][0] - far["fidelity_chance/tint"][0]) < 0.15
  assert abs(far["drift_mean"][-1][0] - far["drift_mean_chance"][-1][0]) \
      < 0.15
  assert lines[-1].splitlines()[2].split()[0] == "0"


def test_history_timestep_end_to_end_on_tiny_runs(tmp_path, monkeypatch):
  causal = tiny_causal_run(tmp_path)
  monkeypatch.setattr(history_timestep, "MIN_SHOTS", 3)
  saved = run_cli(history_timestep, ["--causal", str(causal), "--shots", "3",
                                     "--t-c", "0", "500"],
                  tmp_path, monkeypatch, sheets=True)
  assert set(saved["t_c"]) == {"0", "500"} and saved["window"] == 1
  assert len(saved["t_c"]["500"]["recognised_by_shot"]) == 3
  assert sorted(p.name for p in (tmp_path / "sheets").iterdir()) == [
      f"t_c{t}_scene_{i}.png" for t in (0, 500) for i in range(2)]


# --- experiment 4: causal adaptation ------------------------------------------


def _causal_runs(tmp_path, lct):
  """(from-lct, from-scratch) tiny causal workdirs with initial weights;
  the first starts from `lct`."""
  out = []
  for name, init_from in (("from_lct", lct), ("from_scratch", "")):
    wd = tmp_path / name
    wd.mkdir()
    config = configlib.load(f"{CONFIG}:causal")
    config.train.init_from = init_from
    write_workdir(wd, config)
    out.append(str(wd))
  return out


def test_causal_adaptation_inputs_are_checked_before_sampling(runs, tmp_path,
                                                             monkeypatch):
  lct, single = runs
  from_lct, from_scratch = _causal_runs(tmp_path, lct)
  forbid_sampling(monkeypatch)
  with pytest.raises(ValueError, match="--from-lct must be a context-causal"):
    causal_adaptation.run(lct, from_scratch)
  with pytest.raises(ValueError, match="--from-lct must be a causal "
                                       "fine-tune started from the LCT"):
    causal_adaptation.run(from_scratch, from_scratch)
  with pytest.raises(ValueError, match="--from-scratch must start from no "
                                       "weights"):
    causal_adaptation.run(from_lct, from_lct)
  (tmp_path / "bad").mkdir()
  bad, _ = _causal_runs(tmp_path / "bad", single)
  with pytest.raises(ValueError, match="--from-lct's train.init_from .* must "
                                       "be a bidirectional scene-stage"):
    causal_adaptation.run(bad, from_scratch)
  with pytest.raises(ValueError, match="--scenes must be >= 32"):
    causal_adaptation.run(from_lct, from_scratch, scenes=4)


def test_causal_adaptation_curves_and_steps_to_reach(tmp_path, monkeypatch):
  """Every checkpoint of both runs is evaluated with causal generation,
  step 0 of the LCT-started run from its train.init_from weights (and a
  step-0 checkpoint of the scratch run from itself); the steps to 90% are
  read off the curves."""
  wds = _config_only_runs(tmp_path, lct="demo_long.py:lct",
                          from_lct="demo_long.py:causal",
                          from_scratch="demo_long.py:causal")
  lct, from_lct, from_scratch = wds["lct"], wds["from_lct"], wds[
      "from_scratch"]
  for wd, init_from in ((from_lct, lct), (from_scratch, "")):
    config = load.load_config(wd)
    config.train.init_from = init_from
    (pathlib.Path(wd) / "config.json").write_text(
        config.to_json_best_effort(indent=1))
  for wd, steps in ((from_lct, (200,)), (from_scratch, (0, 200))):
    for step in steps:
      (pathlib.Path(wd) / "checkpoints" / str(step)).mkdir(parents=True)
  loads, calls = [], []

  class Tagged:
    def __init__(self, tag):
      self.tag, self.cfg_scale, self.eta, self.t_c = tag, 1.5, 1.0, 0.3
      self.ts = np.zeros(31)

  def fake_load_sampler(workdir, steps=None, step=None, weights_from=None):
    loads.append((workdir, step, weights_from))
    tag = ("scratch" if workdir == from_scratch else "lct",
           0 if weights_from else step)
    return load.load_config(workdir), Tagged(tag), tag[1]

  def fake_generate(config, sampler, count, *, mode, seed_set, **_):
    calls.append((sampler.tag, mode, seed_set))
    drawn = evaluate.held_out_scenes(config, count, seed_set=seed_set)
    for i, scene in enumerate(drawn):
      frames = [s.frames for s in scene.shots]
      if sampler.tag[0] == "scratch" or sampler.tag[1] == 0:
        # no consistency: shots after the first from other scenes
        frames[1:] = [drawn[(i + k) % count].shots[0].frames
                      for k in range(1, len(frames))]
      yield scene, frames

  monkeypatch.setattr(evaluate, "load_sampler", fake_load_sampler)
  monkeypatch.setattr(evaluate, "generate_held_out", fake_generate)
  lines = []
  result = causal_adaptation.run(from_lct, from_scratch, scenes=32, seeds=2,
                                 log=lines.append)
  # The tiny workdirs hold their initial state as a step-0 checkpoint.
  assert loads == [(from_lct, None, lct), (from_lct, 200, None),
                   (from_scratch, 0, None), (from_scratch, 200, None)]
  assert {m for _, m, _ in calls} == {"causal"} and len(calls) == 8
  lct_curve = result["curves"]["lct"]
  assert list(lct_curve) == [0, 200]
  assert lct_curve[0]["fidelity_mean"][0] < 0.5
  assert lct_curve[200]["fidelity_mean"] == (1.0, 0.0)
  assert result["reach"]["lct"]["own"] == 200
  assert result["reach"]["scratch"]["lct_final"] is None
  assert "90% of its own final first at step 200 and from step 200 on" \
      in lines[-1]


def test_steps_to_reach_and_to_stay():
  steps = [0, 200, 400, 600]
  dip = [0.6, 0.4, 0.55, 0.6]            # high, dips, recovers
  assert causal_adaptation.steps_to_reach(steps, dip, 0.54) == 0
  assert causal_adaptation.steps_to_stay(steps, dip, 0.54) == 400
  assert causal_adaptation.steps_to_stay(steps, [0.6, 0.6, 0.6, 0.5],
                                         0.54) is None
  assert causal_adaptation.steps_to_reach(steps, [0.1] * 4, 0.54) is None


# --- experiment 5: emergent capabilities --------------------------------------


def _composed_truth(a, b):
  """What a perfect composition draws: A's sprite and track, in B's
  environment."""
  fa, fb = a.shots[0].factors, b.shots[0].factors
  factors = {f: (fa if f in ("shape", "sprite_color", "size") else fb)[f]
             for f in syn.SCENE_FACTORS}
  level = syn.radius_level(fa["size"], fa["framing"])
  return np.stack([syn.render_frame(factors, level, c, 32)
                   for c in a.shots[0].centers])


def test_capabilities_judged_against_the_generators_truth(tmp_path,
                                                          monkeypatch):
  """Fed what a perfect model draws (A's sprite in B's environment; the
  held-out continuation; the held-out middle shots) with the conditions,
  and shots of other cases without them, every rate is 1 with the
  conditions and near chance without."""
  wds = _config_only_runs(tmp_path, lct="demo_long.py:lct")
  config = load.load_config(wds["lct"])
  def perfect_or_other(truth_of):
    def fake(config, sampler, *case_and_seed, conditioned):
      *case, seed = case_and_seed
      case = case[0] if len(case) == 1 else tuple(case)
      if conditioned:
        return truth_of(case), []
      # Another case's truth: what a model without the conditions, drawing
      # unrelated scenes, would give.
      return truth_of(others[key(case)]), []
    return fake
  key = lambda c: tuple(d.scene_id for d in c) if isinstance(c, tuple) \
      else c.scene_id
  others = {}
  cases = {}
  for name in capabilities.CAPABILITIES:
    cs = getattr(capabilities, f"{name}_cases")(config, 32, 0)
    for i, c in enumerate(cs):
      others[key(c)] = cs[(i + 7) % len(cs)]
    cases[name] = cs
  for name in capabilities.CAPABILITIES:
    monkeypatch.setattr(capabilities, f"{name}_cases",
                        lambda config, count, seed_set, cs=cases[name]: cs)
  monkeypatch.setattr(capabilities, "compose", perfect_or_other(
      lambda c: _composed_truth(*c)))
  monkeypatch.setattr(capabilities, "extend", perfect_or_other(
      lambda d: d.shots[1].frames))
  monkeypatch.setattr(capabilities, "interpolate", perfect_or_other(
      lambda d: [s.frames for s in d.shots[1:-1]]))
  got = capabilities.measure(config, None, 32, 0, conditioned=True)
  for cap, figures in capabilities.FIGURES.items():
    for fig, _ in figures:
      if fig != "tint_from_identity":
        assert got[cap][fig] == 1.0, (cap, fig)
    assert got[cap]["recognised"] == 1.0
  # A's tint always differs from B's (composition_cases picks B so).
  assert got["composition"]["tint_from_identity"] == 0.0
  control = capabilities.measure(config, None, 32, 0, conditioned=False)
  for cap, fig in (("composition", "tint_from_environment"),
                   ("extension", "track"), ("interpolation", "tint")):
    assert control[cap][fig] < 0.6, (cap, fig, control[cap][fig])
    assert abs(control[cap][fig] - control[cap][f"{fig}/chance"]) < 0.25


class _Recorder:
  """A sampler that records the scenes it is asked for and returns zeros."""

  def __init__(self, config):
    self.scenes, self.config = [], config

  def joint(self, scene):
    self.scenes.append(scene)
    s = self.config.scene
    return [np.zeros((s.frames, s.height, s.width, 3), np.float32)
            if sh.latents is None else sh.latents for sh in scene.shots]


def test_capabilities_condition_what_they_say(tmp_path):
  """The conditioned scene gives its conditions as clean (t_c 0) latents of
  the held-out pixels; the control generates the same shots from the same
  prompts and noise seeds with no condition at all."""
  from lct_jax.data import transform   # pylint: disable=g-import-not-at-top
  wds = _config_only_runs(tmp_path, lct="demo_long.py:lct")
  config = load.load_config(wds["lct"])
  a, b = capabilities.composition_cases(config, 32, 0)[0]
  assert a.shots[0].factors["tint"] != b.shots[0].factors["tint"]
  rec = _Recorder(config)
  capabilities.compose(config, rec, a, b, 5000, conditioned=True)
  capabilities.compose(config, rec, a, b, 5000, conditioned=False)
  cond, ctrl = rec.scenes
  assert [s.num_frames for s in cond.shots][:2] == [1, 1]
  for k, d in enumerate((a, b)):
    assert cond.shots[k].t_c == 0.0
    np.testing.assert_array_equal(
        cond.shots[k].latents[:1],
        transform.pixels_to_latents(d.shots[0].frames[:1]))
  assert cond.shots[2].latents is None
  assert len(ctrl.shots) == 1 and ctrl.shots[0].latents is None
  assert ctrl.shots[0].seed == cond.shots[2].seed
  np.testing.assert_array_equal(ctrl.shots[0].text, cond.shots[2].text)
  np.testing.assert_array_equal(ctrl.text, cond.text)

  take = capabilities.extension_cases(config, 32, 0)[0]
  assert take.continuous and "[SHOT CUT]" not in take.shots[1].prompt
  rec = _Recorder(config)
  capabilities.extend(config, rec, take, 7000, conditioned=True)
  capabilities.extend(config, rec, take, 7000, conditioned=False)
  cond, ctrl = rec.scenes
  assert cond.shots[0].t_c == 0.0 and cond.shots[1].latents is None
  assert ctrl.shots[0].seed == cond.shots[1].seed
  assert all(s.latents is None for s in ctrl.shots)

  drawn = capabilities.interpolation_cases(config, 32, 0)[0]
  rec = _Recorder(config)
  middle, _ = capabilities.interpolate(config, rec, drawn, 9000,
                                       conditioned=True)
  capabilities.interpolate(config, rec, drawn, 9000, conditioned=False)
  cond, ctrl = rec.scenes
  given = [s.latents is not None for s in cond.shots]
  assert given == [True] + [False] * (len(drawn.shots) - 2) + [True]
  assert len(middle) == len(drawn.shots) - 2
  assert all(s.latents is None for s in ctrl.shots)


def test_capabilities_inputs_and_end_to_end(runs, tmp_path, monkeypatch):
  lct, single = runs
  with monkeypatch.context() as m:
    forbid_sampling(m)
    with pytest.raises(ValueError, match="--lct must be a bidirectional"):
      capabilities.run(single)
    with pytest.raises(ValueError, match="--lct must hold >= 3 shots"):
      capabilities.run(lct)
    with pytest.raises(ValueError, match="--seeds must be >= 2"):
      capabilities.run(lct, seeds=1)
  three = tmp_path / "three"
  three.mkdir()
  config = configlib.load(f"{CONFIG}:lct")
  config.scene.max_shots = 3
  write_workdir(three, config)
  saved = run_cli(capabilities, ["--lct", str(three)], tmp_path, monkeypatch,
                  sheets=True)
  assert set(saved["rows"]) == {"conditioned", "control"}
  assert saved["rows"]["conditioned"]["composition"]["recognised"][0] == 0.0
  assert len(list((tmp_path / "sheets").iterdir())) == 12


def test_causal_adaptation_refuses_a_start_of_another_model(tmp_path):
  wds = _config_only_runs(tmp_path, lct="demo_long.py:lct",
                          from_lct="demo_long.py:causal",
                          from_scratch="demo_long.py:causal")
  lct = load.load_config(wds["lct"])
  lct.model.depth += 1
  (pathlib.Path(wds["lct"]) / "config.json").write_text(
      lct.to_json_best_effort(indent=1))
  for wd, init_from in ((wds["from_lct"], wds["lct"]),
                        (wds["from_scratch"], "")):
    config = load.load_config(wd)
    config.train.init_from = init_from
    (pathlib.Path(wd) / "config.json").write_text(
        config.to_json_best_effort(indent=1))
  with pytest.raises(ValueError, match="--from-lct and its train.init_from "
                                       "are different models"):
    causal_adaptation.run(wds["from_lct"], wds["from_scratch"])


def test_causal_adaptation_end_to_end_on_tiny_runs(runs, tmp_path,
                                                   monkeypatch):
  """The real samplers: step 0 of the LCT-started run from the tiny LCT
  weights under the causal mask, the scratch run from its own (step-0)
  checkpoint."""
  lct, _ = runs
  from_lct, from_scratch = _causal_runs(tmp_path, lct)
  saved = run_cli(causal_adaptation, ["--from-lct", from_lct,
                                      "--from-scratch", from_scratch],
                  tmp_path, monkeypatch, sheets=True)
  assert list(saved["curves"]["lct"]) == ["0"]
  assert list(saved["curves"]["scratch"]) == ["0"]
  assert saved["curves"]["lct"]["0"]["recognised"][0] == 0.0
  assert sorted(p.name for p in (tmp_path / "sheets").iterdir()) == [
      f"{r}_step0_{i}.png" for r in ("lct", "scratch") for i in range(2)]
