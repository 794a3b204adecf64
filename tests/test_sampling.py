"""Euler sampler, CFG and joint generation with conditions, checked against
hand computations with the model's own forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from _util import tiny_config
from lct_jax import batch as batch_lib
from lct_jax.diffusion import flow
from lct_jax.model import MMDiT
from lct_jax.sampling import euler, joint

def test_timesteps_are_the_shifted_uniform_grid():
  t = euler.timesteps(4)
  np.testing.assert_array_equal(t, np.float32([1, .75, .5, .25, 0]))
  t3 = euler.timesteps(4, shift=3.0)
  assert t3[0] == 1 and t3[-1] == 0 and np.all(np.diff(t3) < 0)
  np.testing.assert_allclose(
      t3, np.asarray(flow.shift_timesteps(jnp.asarray(t), 3.0)), rtol=1e-6)
  with pytest.raises(ValueError, match="steps"):
    euler.timesteps(0)

def test_euler_integrates_a_known_ode():
  # dz/dt = z: Euler with h = -1/S from z(1) = 1 gives (1 - 1/S)^S exactly.
  z = euler.sample(lambda z, t: z, jnp.ones(()), euler.timesteps(8))
  np.testing.assert_allclose(float(z), (1 - 1 / 8) ** 8, rtol=1e-6)

def test_guide_by_hand():
  vc, vu = jnp.float32([1.0, 2.0]), jnp.float32([0.5, -1.0])
  np.testing.assert_allclose(euler.guide(vc, vu, 3.0), [2.0, 8.0])
  np.testing.assert_array_equal(euler.guide(vc, vu, 1.0), vc)

def test_null_text_matches_training_dropout():
  text = jnp.int32([[[5, 6, 0], [7, 0, 0]]])
  null, _ = euler.null_text(text, jnp.int32([[2, 1]]))
  np.testing.assert_array_equal(null, [[[1, 1, 0], [1, 0, 0]]])

@pytest.fixture(scope="module")
def setup():
  c = tiny_config()
  model = MMDiT(c, rngs=nnx.Rngs(1))
  graphdef, params = nnx.split(model, nnx.Param)
  b = batch_lib.random_batch(c, 3, 1, min_shots=3)
  b["num_frames"] = np.int32([[3, 1, 2]])
  rng = np.random.default_rng(0)
  eps = rng.standard_normal(b["latents"].shape).astype(np.float32)
  eps_c = rng.standard_normal(b["latents"].shape).astype(np.float32)
  return c, graphdef, nnx.to_pure_dict(params), b, eps, eps_c

def run(setup, cond, t_cond, scale=1.0, use_cfg=False, latents=None):
  _, graphdef, params, b, eps, eps_c = setup
  if latents is not None:
    b = dict(b, latents=latents)
  return np.asarray(joint.jitted(graphdef)(
      params, b, np.asarray(cond), np.asarray(t_cond, np.float32), eps,
      eps_c, euler.timesteps(1), scale, None, use_cfg=use_cfg))

def test_one_euler_step_is_z_minus_v(setup):
  _, graphdef, params, b, eps, _ = setup
  calls = []
  with euler.progress_hook(lambda: calls.append(1)):
    out = run(setup, [[False] * 3], [[0.0] * 3])
  assert len(calls) == 1         # one Euler step reported to the host
  v = nnx.merge(graphdef, params)(eps, jnp.ones((1, 3)), b["text"],
                                  b["text_len"], b["num_frames"])
  want = np.asarray(eps - v)
  fm = flow.frame_mask(b["num_frames"], 3)
  np.testing.assert_allclose(out[fm], want[fm], rtol=1e-5, atol=1e-5)
  assert np.all(out[~fm] == 0)

def test_conditions_are_bit_identical_and_condition(setup):
  _, graphdef, params, b, eps, eps_c = setup
  cond = [[True, False, True]]
  t_c = [[0.0, 0.0, 0.4]]
  out = run(setup, cond, t_c)
  assert out[0, 0].tobytes() == b["latents"][0, 0].tobytes()
  assert out[0, 2].tobytes() == b["latents"][0, 2].tobytes()
  # By hand: the generated shot sees the conditions at their t_c.
  z_in = np.where(np.array(cond)[..., None, None, None, None],
                  np.asarray(flow.add_noise(b["latents"], eps_c,
                                            jnp.float32(t_c))), eps)
  v = nnx.merge(graphdef, params)(z_in, jnp.float32([[0.0, 1.0, 0.4]]),
                                  b["text"], b["text_len"], b["num_frames"])
  np.testing.assert_allclose(out[0, 1, :1], np.asarray(eps - v)[0, 1, :1],
                             rtol=1e-5, atol=1e-5)
  # The conditions matter: other condition content, other shot 2.
  other = run(setup, cond, t_c, latents=b["latents"] + 1.0)
  assert np.abs(other[0, 1, :1] - out[0, 1, :1]).max() > 1e-3

def test_cfg_scale_one_is_no_guidance(setup):
  cond, t_c = [[True, False, False]], [[0.2, 0.0, 0.0]]
  plain = run(setup, cond, t_c)
  guided1 = run(setup, cond, t_c, scale=1.0, use_cfg=True)
  np.testing.assert_allclose(guided1, plain, rtol=1e-5, atol=1e-5)
  guided3 = run(setup, cond, t_c, scale=3.0, use_cfg=True)
  assert np.abs(guided3 - plain).max() > 1e-3
  # By hand: s * cond + (1 - s) * uncond, with uncond = scale 0.
  uncond = run(setup, cond, t_c, scale=0.0, use_cfg=True)
  np.testing.assert_allclose(guided3, 3 * plain - 2 * uncond, rtol=1e-4,
                             atol=1e-4)


def test_posterior_noise_is_ddpm_gaussian_conditioning():
  # q(z_s | z_t, x) for z_u = (1 - u) x + u eps: z_t = a z_s + b e with
  # a = (1 - t) / (1 - s), b^2 = t^2 - a^2 s^2; Var(z_s | z_t, x) by
  # Gaussian conditioning = s^2 - (a s^2)^2 / t^2.
  for t, s in [(0.9, 0.8), (0.5, 0.3), (0.2, 0.05), (0.04, 0.0)]:
    a = (1 - t) / (1 - s)
    var = s**2 - (a * s**2)**2 / t**2
    np.testing.assert_allclose(float(euler.posterior_noise_std(t, s)),
                               np.sqrt(max(var, 0.0)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        float(euler.posterior_noise_std(t, s, 0.5)),
        0.5 * np.sqrt(max(var, 0.0)), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_samplers_draw_a_gaussian_data_distribution(eta):
  # Data x ~ N(0, a^2): the exact velocity is known in closed form,
  # E[x | z_t] = (1 - t) a^2 z / ((1 - t)^2 a^2 + t^2), v = (z - E[x|z]) / t.
  # Both the ODE and the stochastic sampler must then end at std a (DDPM's
  # first-order error is ~1/steps: 0.456 at 30 steps, 0.497 at 300; more
  # noise than the posterior's, e.g. re-noising fully, ends at 0.35).
  a, n = 0.5, 20_000

  def velocity(z, t):
    x_hat = (1 - t) * a**2 * z / ((1 - t)**2 * a**2 + t**2)
    return (z - x_hat) / t

  z0 = jax.random.normal(jax.random.key(0), (n,))
  keys = jax.random.key_data(jax.random.split(jax.random.key(1), n))
  noise_fn = None if eta == 0 else (
      lambda i: euler.churn_noise(keys, i, (), jnp.float32))
  x = np.asarray(euler.sample(velocity, z0, euler.timesteps(300), eta=eta,
                              noise_fn=noise_fn))
  assert abs(x.std() - a) < 0.02 * a and abs(x.mean()) < 0.02
