"""The synthetic metric against ground truth and against garbage: real
shots are recognised with every factor right, garbage is not recognised
and scores no more than chance, and unrelated real shots score chance."""
import functools

import numpy as np
import pytest

from lct_jax.data import consistency
from lct_jax.data import counterfeits as cf
from lct_jax.data import estimators as est
from lct_jax.data import synthetic as syn


@functools.lru_cache(maxsize=None)
def scenes(count=200, max_shots=4, max_frames=4, size=32, offset=0):
  return tuple(syn.generate_scene(offset + seed, max_shots=max_shots,
                                  max_frames=max_frames, size=size)
               for seed in range(count))


def rates(all_scenes, transform):
  """(recognised, every factor right) over all shots of the scenes."""
  recognised, right, n = 0, 0, 0
  for scene in all_scenes:
    for shot in scene.shots:
      e = est.estimate_shot(transform(shot.frames))
      n += 1
      recognised += e.recognised
      right += all(e.factors[f] == shot.factors[f] for f in est.ALL_FACTORS)
  return recognised / n, right / n


@pytest.mark.parametrize("sigma", [0.0, 8.0])
def test_ground_truth_recognised_with_every_factor_right(sigma):
  rng = np.random.default_rng(0)
  noisy = (lambda f: f) if sigma == 0 else (
      lambda f: cf.pixel_noise(rng, f, sigma))
  recognised, right = rates(scenes(), noisy)
  assert recognised >= 0.99 and right >= 0.99, (recognised, right)


@pytest.mark.parametrize("sigma_px,noise", [(0.5, 0.0), (0.5, 8.0)])
def test_ground_truth_with_soft_edges_recognised(sigma_px, noise):
  """A 0.5 px blur softens every sprite's rim, the smallest sprites' most;
  the estimators must still name every factor (the colour comes from the
  interior, the shape from the mask)."""
  rng = np.random.default_rng(1)
  def soft(f):
    f = cf.soft_edges(f, sigma_px)
    return cf.pixel_noise(rng, f, noise) if noise else f
  recognised, right = rates(scenes(), soft)
  assert recognised >= 0.99 and right >= 0.99, (recognised, right)


def test_soft_edges_is_a_gaussian_blur():
  """Against a hand-computed case: one white pixel on black spreads as the
  normalised 1-D kernel's outer product, symmetric and summing to 255."""
  frames = np.zeros((1, 9, 9, 3), np.uint8)
  frames[0, 4, 4] = 255
  out = cf.soft_edges(frames, 0.5)[0, :, :, 0].astype(float)
  k = np.exp(-0.5 * (np.arange(-2, 3) / 0.5) ** 2)
  k /= k.sum()
  np.testing.assert_allclose(out[2:7, 2:7], np.round(255 * np.outer(k, k)),
                             atol=0)
  assert out[4, 4] == np.round(255 * k[2] ** 2) and out.sum() > 250
  assert (out[:2] == 0).all() and (out[7:] == 0).all()


def test_other_sizes_and_longer_shots():
  recognised, right = rates(scenes(count=20, size=64, max_frames=6),
                            lambda f: f)
  assert recognised >= 0.99 and right >= 0.99


def fake_scenes(maker, count=60, seed=0):
  """Scenes whose shots are `maker`'s garbage built on real shots."""
  rng = np.random.default_rng(seed)
  out = []
  for scene in scenes(count=count):
    frames = [maker(rng, s.frames) for s in scene.shots]
    out.append((frames, [s.prompt for s in scene.shots], scene.global_prompt))
  return out


@pytest.mark.parametrize("name", sorted(cf.GARBAGE))
def test_garbage_is_not_recognised_and_scores_no_more_than_chance(name):
  scored = [consistency.score_scene(f, p, global_prompt=g)
            for f, p, g in fake_scenes(cf.GARBAGE[name])]
  recognised = np.mean([s["recognised"] for s in scored])
  assert recognised <= 0.05, recognised
  multi = [s for s in scored if not np.isnan(s["consistency_mean"])]
  mean = np.mean([s["consistency_mean"] for s in multi])
  assert mean <= multi[0]["consistency_mean_chance"], mean
  for factor in syn.SCENE_FACTORS:
    value = np.mean([s["consistency"][factor] for s in multi])
    # sprite_free draws its backgrounds independently per shot: chance, up
    # to sampling error; every other kind: no factor known at all.
    assert value <= consistency.PRIOR_CHANCE[factor] + 0.1, (factor, value)


def test_unrelated_real_shots_score_chance():
  """Scenes of 4 shots, each from a different real scene: recognised, and
  their pairwise consistency equals 1 / V within sampling error."""
  pool = [s.shots[0] for s in scenes(count=400, offset=10_000)]
  groups = [pool[i:i + 4] for i in range(0, len(pool), 4)]
  scored = [consistency.score_scene([s.frames for s in g],
                                    [s.prompt for s in g]) for g in groups]
  assert np.mean([s["recognised"] for s in scored]) >= 0.99
  for factor in syn.SCENE_FACTORS:
    value = np.mean([s["consistency"][factor] for s in scored])
    p = consistency.PRIOR_CHANCE[factor]
    # 100 scenes x 6 pairs; pairs within a scene share shots, so take the
    # standard error of 100 scene means (each of 6 pairs) generously.
    stderr = np.sqrt(p * (1 - p) / 6 / len(scored)) * 2
    assert abs(value - p) <= 3 * stderr, (factor, value, p)


def test_score_scenes_chance_is_the_cross_scene_statistic():
  """A 'model' that draws one fixed scene whatever the prompt: perfectly
  consistent, and just as consistent across scenes: no gap over chance."""
  fixed = next(s for s in scenes() if len(s.shots) >= 3)
  records = []
  for scene in scenes(count=20, offset=20_000):
    estimates = [est.estimate_shot(s.frames) for s in fixed.shots[:2]]
    records.append(dict(estimates=estimates,
                        prompts=[s.prompt for s in scene.shots[:2]],
                        global_prompt=scene.global_prompt))
  table = consistency.score_scenes(records)
  for f in syn.SCENE_FACTORS:
    assert table["consistency"][f] == 1.0
    assert table["consistency_chance"][f] == 1.0
  # Real held-out scenes: consistent far above their cross-scene chance.
  records = [dict(estimates=[est.estimate_shot(s.frames) for s in sc.shots],
                  prompts=[s.prompt for s in sc.shots],
                  global_prompt=sc.global_prompt,
                  truth=[s.factors for s in sc.shots])
             for sc in scenes(count=40) if len(sc.shots) >= 2]
  table = consistency.score_scenes(records)
  assert table["recognised"] >= 0.99
  assert all(v >= 0.99 for v in table["accuracy"].values()), table
  for f in syn.SCENE_FACTORS:
    assert table["consistency"][f] == 1.0
    assert table["consistency_chance"][f] < 0.7
  for f in consistency.GLOBAL_FACTORS:
    assert table["global_adherence"][f] == 1.0
    assert table["global_adherence_chance"][f] < 0.7


def test_recognised_by_truth_splits_by_radius_and_motion():
  """Ground truth is recognised in every group; a model that drew blank
  frames for every sprite of the smallest radius (3 px) and every moving
  sprite scores 0 in exactly those groups, and the groups count the shots
  the generator drew (hand-counted from the truth here)."""
  shots = [s for sc in scenes(count=40) for s in sc.shots]
  truth = [s.factors for s in shots]
  blank = est.estimate_shot(np.zeros((2, 32, 32, 3), np.uint8))
  is_small = [syn.radius_level(t["size"], t["framing"]) == 0 for t in truth]
  is_moving = [t["action"] != "still" for t in truth]
  assert 0 < sum(is_small) < len(shots) and 0 < sum(is_moving) < len(shots)
  real = [est.estimate_shot(s.frames) for s in shots]
  by = consistency.recognised_by_truth(real, truth)
  assert {g["recognised"] for kind in by.values() for g in kind.values()} \
      == {1.0}
  assert sum(g["shots"] for g in by["radius_px"].values()) == len(shots)
  assert by["motion"]["moving"]["shots"] == sum(is_moving)
  assert by["radius_px"]["3"]["shots"] == sum(is_small)

  broken = [blank if small or moving else e
            for e, small, moving in zip(real, is_small, is_moving)]
  by = consistency.recognised_by_truth(broken, truth)
  assert by["radius_px"]["3"]["recognised"] == 0.0
  assert by["motion"]["moving"]["recognised"] == 0.0
  still_not_small = [not s and not m for s, m in zip(is_small, is_moving)]
  assert by["motion"]["still"]["recognised"] == pytest.approx(
      sum(still_not_small) / (len(shots) - sum(is_moving)))


def test_unknown_never_agrees():
  blank = np.zeros((2, 32, 32, 3), np.uint8)
  score = consistency.score_scene([blank, blank], ["a", "b"])
  assert score["recognised"] == 0.0
  assert all(v == 0.0 for v in score["consistency"].values())


def test_score_scene_consistency_and_adherence():
  scene = next(s for s in scenes() if len(s.shots) >= 3)
  frames = [shot.frames for shot in scene.shots]
  prompts = [shot.prompt for shot in scene.shots]
  score = consistency.score_scene(frames, prompts,
                                  global_prompt=scene.global_prompt)
  assert score["recognised"] == 1.0
  assert all(v == 1.0 for v in score["consistency"].values()), score
  assert score["adherence"] == {"framing": 1.0, "action": 1.0}
  assert all(v == 1.0 for v in score["global_adherence"].values())
  assert "tint" not in score["global_adherence"]
  assert score["consistency_chance"]["tint"] == pytest.approx(1 / 3)
  # One shot from a scene lit differently, with another sprite colour:
  # of n(n-1)/2 pairs, the n-1 pairs with the intruder disagree.
  factors = scene.shots[0].factors
  intruder = next(s for s in scenes()
                  if s.shots[0].factors["tint"] != factors["tint"]
                  and s.shots[0].factors["sprite_color"]
                  != factors["sprite_color"])
  frames[1] = intruder.shots[0].frames
  score = consistency.score_scene(frames, prompts)
  n = len(frames)
  expected = 1 - (n - 1) / (n * (n - 1) / 2)
  assert score["consistency"]["tint"] == pytest.approx(expected)
  assert score["consistency"]["sprite_color"] == pytest.approx(expected)


def test_score_scene_adherence_reads_the_prompt():
  scene = next(s for s in scenes() if len(s.shots) >= 2 and not s.continuous
               and s.shots[0].factors["framing"] != "wide")
  frames = [shot.frames for shot in scene.shots]
  prompts = [shot.prompt for shot in scene.shots]
  prompts[0] = prompts[0].replace(scene.shots[0].factors["framing"], "wide")
  score = consistency.score_scene(frames, prompts)
  assert score["adherence"]["framing"] == pytest.approx(
      1 - 1 / len(frames))
  with pytest.raises(ValueError, match="one prompt per shot"):
    consistency.score_scene(frames, prompts[:1])


def test_bad_frames_are_clear_errors():
  good = scenes()[0].shots[0].frames
  with pytest.raises(ValueError, match="uint8"):
    est.estimate_shot(good.astype(np.float32))
  with pytest.raises(ValueError, match="shape"):
    est.estimate_shot(good[:, :20])
  with pytest.raises(ValueError, match="shape"):
    est.estimate_shot(good[0])


def test_evidence_summary_says_which_test_fails():
  """Noisy ground truth is within every threshold; Gaussian noise misses
  the sprite tests (no sprite found counts as outside)."""
  rng = np.random.default_rng(3)
  shots = [s for scene in scenes(count=20) for s in scene.shots]
  truth = est.evidence_summary(
      [est.estimate_shot(cf.pixel_noise(rng, s.frames, 8.0)) for s in shots])
  assert all(e["within"] == 1.0 for e in truth.values()), truth
  assert truth["template_iou"]["median"] > 0.9
  noise = est.evidence_summary(
      [est.estimate_shot(cf.GARBAGE["gaussian_noise"](rng, s.frames))
       for s in shots])
  assert noise["template_iou"]["within"] <= 0.05, noise
  assert noise["background_residual"]["within"] <= 0.05, noise
