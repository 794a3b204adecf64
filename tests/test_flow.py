"""Rectified flow: loss by hand, timestep distribution, augmentations."""
import jax
import jax.numpy as jnp
import numpy as np

from lct_jax.diffusion import augment, flow


def test_loss_equals_hand_computed_per_shot_means():
  # 2 scenes x 3 shot slots, F=2 frames of 1x1x2 elements; easy numbers.
  v = np.zeros((2, 3, 2, 1, 1, 2), np.float32)
  target = np.zeros_like(v)
  v[0, 0, 0] = [1, 1]; v[0, 0, 1] = [3, 3]    # shot (0,0): 2 frames
  v[0, 1, 0] = [2, 0]                          # shot (0,1): 1 frame
  v[0, 1, 1] = [100, 100]                      #   padded frame: ignored
  v[0, 2] = 50                                 # padded shot: ignored
  v[1, 0, 0] = [0, 4]                          # shot (1,0): 1 frame
  num_frames = np.array([[2, 1, 0], [1, 0, 0]], np.int32)
  # Per-shot MSE by hand: (1+1+9+9)/4 = 5; (4+0)/2 = 2; (0+16)/2 = 8.
  mse = np.asarray(flow.per_shot_mse(v, target, num_frames))
  np.testing.assert_allclose(mse, [[5, 2, 0], [8, 0, 0]])
  loss_sum, count = flow.shot_loss_sum(v, target, num_frames)
  assert float(count) == 3
  # Equal weight per shot, whatever its length: (5 + 2 + 8) / 3.
  np.testing.assert_allclose(float(loss_sum / count), 5.0)


def test_noising_and_target():
  z0 = np.full((1, 2, 1, 1, 1, 1), 2.0, np.float32)
  eps = np.full_like(z0, -1.0)
  t = np.array([[0.25, 1.0]], np.float32)
  zt = np.asarray(flow.add_noise(z0, eps, t)).ravel()
  np.testing.assert_allclose(zt, [0.75 * 2 - 0.25, -1.0])    # t=1: pure noise
  np.testing.assert_allclose(np.asarray(flow.velocity_target(z0, eps)), -3.0)


def test_logit_normal_timesteps_and_shift():
  t = np.asarray(flow.sample_timesteps(jax.random.key(0), (200_000,),
                                       mean=0.5, std=0.8))
  logit = np.log(t / (1 - t))
  assert abs(logit.mean() - 0.5) < 0.01 and abs(logit.std() - 0.8) < 0.01
  # Shots draw independently: a [B, N] draw is not constant across shots.
  tn = np.asarray(flow.sample_timesteps(jax.random.key(1), (4, 9)))
  assert np.all(tn.std(axis=1) > 0)
  # SD3 shift s t / (1 + (s-1) t): at t = 0.5, s = 3 -> 0.75.
  np.testing.assert_allclose(float(flow.shift_timesteps(jnp.float32(0.5), 3.0)),
                             0.75)
  assert flow.resolution_shift(4096, 1024) == 2.0


def keys(b, seed=0):
  return jax.random.split(jax.random.key(seed), b)


def test_frame_substitution_picks_one_of_the_shots_frames():
  rng = np.random.default_rng(0)
  lat = rng.standard_normal((16, 3, 4, 2, 2, 1)).astype(np.float32)
  nf = np.array([[4, 2, 0]] * 16, np.int32)
  out, nf2 = augment.substitute_frames(keys(16), lat, nf, 1.0)
  out, nf2 = np.asarray(out), np.asarray(nf2)
  assert np.array_equal(nf2, np.array([[1, 1, 0]] * 16))
  for b in range(16):
    for s in range(2):
      # Frame 0 now equals one of the shot's *valid* frames.
      assert any(np.array_equal(out[b, s, 0], lat[b, s, f])
                 for f in range(nf[b, s]))
  out0, nf0 = augment.substitute_frames(keys(16), lat, nf, 0.0)
  assert np.array_equal(np.asarray(out0), lat) and np.array_equal(nf0, nf)


def test_text_dropout_nulls_whole_scene_keeping_lengths():
  text = np.full((64, 3, 4), 7, np.int32)
  tl = np.array([[2, 4, 0]] * 64, np.int32)
  text[:, :, 2:] = 0
  text[:, 1, 2:] = 9
  out, _ = augment.drop_text(keys(64), text, tl, 0.5)
  out = np.asarray(out)
  dropped = np.all(out == np.where(np.arange(4) < tl[..., None],
                                   augment.NULL_TOKEN, augment.PAD_TOKEN),
                   axis=(1, 2))
  kept = np.all(out == text, axis=(1, 2))
  assert np.all(dropped | kept) and 10 < dropped.sum() < 54
  emb = np.ones((8, 3, 4, 5), np.float32)
  out, pooled = augment.drop_text(keys(8), emb, tl[:8], 1.0,
                                  pooled=np.ones((8, 3, 6), np.float32))
  assert not np.any(np.asarray(out)) and not np.any(np.asarray(pooled))


def test_single_shot_mixing_moves_a_shot_to_slot_one():
  rng = np.random.default_rng(1)
  B = 32
  batch = {
      "latents": rng.standard_normal((B, 3, 2, 1, 1, 1)).astype(np.float32),
      "num_frames": np.array([[2, 1, 2]] * B, np.int32),
      "text": rng.integers(2, 30, (B, 4, 3)).astype(np.int32),
      "text_len": np.array([[3, 1, 2, 3]] * B, np.int32),
  }
  out = jax.tree.map(np.asarray, augment.to_single_shot(keys(B), batch, 1.0))
  assert np.all(out["num_frames"][:, 1:] == 0)
  assert np.all(out["text_len"][:, 0] == 0)            # no global prompt
  chosen = set()
  for b in range(B):
    s = [k for k in range(3)
         if np.array_equal(out["latents"][b, 0], batch["latents"][b, k])]
    assert len(s) == 1
    chosen.add(s[0])
    assert np.array_equal(out["text"][b, 1], batch["text"][b, 1 + s[0]])
    assert out["text_len"][b, 1] == batch["text_len"][b, 1 + s[0]]
    assert out["num_frames"][b, 0] == batch["num_frames"][b, s[0]]
  assert chosen == {0, 1, 2}


def test_timestep_mixture_matches_its_cdf_and_is_off_by_default():
  from scipy.stats import norm
  key = jax.random.key(3)
  t = np.asarray(flow.sample_timesteps(key, (200_000,), mean=1.0, std=1.0,
                                       low_fraction=0.3, low_mean=-1.0))
  logit = np.log(t / (1 - t))
  for u in (-2.0, -1.0, 0.0, 1.0, 2.0):
    cdf = 0.3 * norm.cdf(u + 1.0) + 0.7 * norm.cdf(u - 1.0)
    assert abs(np.mean(logit <= u) - cdf) < 0.005, (u, cdf)
  # low_fraction = 0 draws exactly the plain logit-normal of this key, so
  # runs that do not use the mixture reproduce bit for bit.
  plain = jax.nn.sigmoid(1.0 + jax.random.normal(key, (64,), jnp.float32))
  np.testing.assert_array_equal(
      np.asarray(flow.sample_timesteps(key, (64,), mean=1.0, std=1.0)),
      np.asarray(plain))
