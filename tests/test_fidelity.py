"""`lct_jax.data.fidelity`: fidelity to history, drift from shot 1 and
recognition by shot index, against a hand-computed case and against the
generator's own scenes (fidelity 1) and shots of other scenes (chance)."""
import numpy as np
import pytest

from lct_jax import evaluate
from lct_jax.data import estimators, fidelity
from lct_jax.data import synthetic as syn
from lct_jax.data.estimators import UNKNOWN, ShotEstimate


def _shot(tint, shape="circle"):
  factors = {f: "x" for f in estimators.ALL_FACTORS}
  factors.update(tint=tint, shape=shape)
  return ShotEstimate(factors=factors, evidence={})


def test_hand_computed_fidelity_drift_and_chance():
  # Sequence a: tints warm, warm, cool, warm; window 2.
  # Pools (), (0,), (0, 1), (1, 2).
  #   fidelity pairs: (1,0) agree; (2,0) (2,1) no; (3,1) yes, (3,2) no
  #   -> 2 of 5 = 0.4.  Drift: k=1 yes, k=2 no, k=3 yes.
  # Sequence b: cool, unknown, cool (UNKNOWN agrees with nothing).
  #   fidelity: (1,0) no; (2,0) yes, (2,1) no -> 1 of 3.
  #   Drift: k=1 no, k=2 yes.  So drift k=1: 1 of 2, k=2: 1 of 2 (a2 no).
  a = [_shot(t) for t in ("warm", "warm", "cool", "warm")]
  b = [_shot(t) for t in ("cool", UNKNOWN, "cool")]
  seqs = [dict(estimates=a, pools=evaluate.history_pools(4, 2)),
          dict(estimates=b, pools=evaluate.history_pools(3, 2))]
  r = fidelity.score_sequences(seqs)
  assert r["fidelity"]["tint"] == pytest.approx(3 / 8)
  assert r["drift"][1]["tint"] == 0.5 and r["drift"][2]["tint"] == 0.5
  assert r["drift"][3]["tint"] == 1.0            # only sequence a has k=3
  assert r["fidelity"]["shape"] == 1.0 and r["drift_mean"][1] == pytest.approx(
      (0.5 + 5) / 6)
  # Chance: a's shots against b's history at a's pool indices, and back.
  #   a1 warm vs b0 cool: no. a2 cool vs b0, b1: yes, no. a3 warm vs b1, b2:
  #   no, no.  b1 unknown vs a0: no. b2 cool vs a0, a1: no, no. -> 1 of 8.
  assert r["fidelity_chance"]["tint"] == pytest.approx(1 / 8)
  # Drift chance: a1..a3 vs b0 (cool): no, yes, no; b1, b2 vs a0 (warm):
  #   no, no.  k=1: 0 of 2, k=2: 1 of 2, k=3: 0 of 1.
  assert [r["drift_chance"][k]["tint"] for k in (1, 2, 3)] == [0.0, 0.5, 0.0]
  assert r["recognised"] == {0: 1.0, 1: 0.5, 2: 1.0, 3: 1.0}
  assert r["shots"] == {0: 2, 1: 2, 2: 2, 3: 1}


def _scenes(count, shots=6):
  scenes, seed = [], 5000
  while len(scenes) < count:
    s = syn.generate_scene(seed, max_shots=shots, max_frames=2)
    seed += 1
    if len(s.shots) == shots:
      scenes.append(s)
  return scenes


def test_the_generators_scenes_keep_their_history_and_others_do_not():
  scenes = _scenes(24)
  pools = evaluate.history_pools(6, 3)
  own = [dict(estimates=[estimators.estimate_shot(s.frames)
                         for s in sc.shots], pools=pools) for sc in scenes]
  r = fidelity.score_sequences(own)
  for f in syn.SCENE_FACTORS:
    assert r["fidelity"][f] == 1.0 and r["drift"][5][f] == 1.0
  assert all(v == 1.0 for v in r["recognised"].values())
  # Shot k of scene i + k: every shot from a different scene.
  mixed = [dict(estimates=[own[(i + k) % len(own)]["estimates"][k]
                           for k in range(6)], pools=pools)
           for i in range(len(own))]
  m = fidelity.score_sequences(mixed)
  for f in ("tint", "background_color", "sprite_color"):
    assert abs(m["fidelity"][f] - m["fidelity_chance"][f]) < 0.12, f
    assert m["fidelity"][f] < 0.5
  assert r["fidelity_chance"]["tint"] == pytest.approx(
      1 / len(syn.TINTS), abs=0.12)


def test_a_pool_that_is_not_history_is_an_error():
  a = [_shot("warm"), _shot("warm")]
  with pytest.raises(ValueError, match="shot 1: history \\[1\\] holds \\[1\\]"):
    fidelity.score_sequences([dict(estimates=a, pools=[(), (1,)])])
  with pytest.raises(ValueError, match="2 shots but 1 history pools"):
    fidelity.score_sequences([dict(estimates=a, pools=[()])])
  assert np.isnan(fidelity.score_sequences(
      [dict(estimates=a[:1], pools=[()])])["fidelity"]["tint"])
