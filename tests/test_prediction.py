"""model.prediction: a data-predicting network's output becomes the
rectified-flow velocity (eps - z_0) exactly, in every forward path."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from lct_jax import batch as batch_lib
from lct_jax import configlib
from lct_jax.diffusion import flow
from lct_jax.model.prediction import to_velocity
from lct_jax.training import init_model


def test_perfect_data_prediction_is_the_velocity_target():
  k0, k1, k2 = jax.random.split(jax.random.key(0), 3)
  z0 = jax.random.normal(k0, (2, 3, 1, 4, 4, 3))
  eps = jax.random.normal(k1, z0.shape)
  t = jax.random.uniform(k2, (2, 3), minval=0.06, maxval=1.0)
  z_t = flow.add_noise(z0, eps, t)
  m = ml_collections.ConfigDict(dict(prediction="data",
                                     prediction_t_min=0.05))
  v = to_velocity(z0, z_t, t, m)
  np.testing.assert_allclose(v, flow.velocity_target(z0, eps), atol=2e-5)
  m.prediction = "velocity"
  np.testing.assert_array_equal(to_velocity(z0, z_t, t, m), z0)
  # Below t_min the division is clipped: finite, and (z_t - x) / t_min.
  t_small = jnp.full((2, 3), 1e-4)
  m.prediction = "data"
  v = to_velocity(z0 * 0, z0, t_small, m)
  np.testing.assert_allclose(v, z0 / 0.05, rtol=1e-6)


def test_mmdit_applies_it_to_its_own_output():
  c = configlib.base_config()
  c.model.zero_init = False
  graphdef, params = init_model(c)
  b = batch_lib.random_batch(c, 0, 2)
  t = jax.random.uniform(jax.random.key(1), b["num_frames"].shape, minval=0.1)
  args = (b["latents"], t, b["text"], b["text_len"], b["num_frames"])
  raw = nnx.merge(graphdef, params)(*args)
  c.model.prediction = "data"
  graphdef_x, _ = init_model(c)
  v = nnx.merge(graphdef_x, params)(*args)
  expected = (b["latents"] - raw) / t[:, :, None, None, None, None]
  np.testing.assert_allclose(v, expected, rtol=1e-5, atol=1e-5)


def test_unknown_prediction_is_a_config_error():
  c = configlib.base_config()
  c.model.prediction = "noise"
  with pytest.raises(ValueError, match="model.prediction"):
    configlib.validate(c)
