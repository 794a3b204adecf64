"""3D RoPE against an independent complex-number formula (float64 numpy)."""
import jax.numpy as jnp
import numpy as np
import pytest

from lct_jax.layout import apply_rope, rope_tables, validate_axes

AXES, THETA = (4, 6, 6), 256.0


def complex_rope(x, pos, axes=AXES, theta=THETA):
  """Pair (x[2k], x[2k+1]) is the complex number x[2k] + i x[2k+1]; band a
  rotates by pos[a] * theta^(-2j/d_a), j = 0..d_a/2-1."""
  z = x[..., 0::2].astype(np.float64) + 1j * x[..., 1::2]
  angles = []
  for a, d in enumerate(axes):
    freq = theta ** (-np.arange(0, d, 2) / d)
    angles.append(pos[..., a:a + 1].astype(np.float64) * freq)
  angle = np.concatenate(angles, -1)[:, :, None, :]       # [B, S, 1, K]
  z = z * np.exp(1j * angle)
  out = np.empty(x.shape, np.float64)
  out[..., 0::2], out[..., 1::2] = z.real, z.imag
  return out


def test_matches_complex_rotation():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 7, 3, 16)).astype(np.float32)
  pos = rng.integers(0, 50, (2, 7, 3)).astype(np.int32)
  cos, sin = rope_tables(jnp.asarray(pos), AXES, THETA)
  out = np.asarray(apply_rope(jnp.asarray(x), cos, sin))
  np.testing.assert_allclose(out, complex_rope(x, pos), atol=2e-5)


def test_zero_position_is_identity():
  x = np.random.default_rng(1).standard_normal((1, 4, 2, 16)).astype(np.float32)
  cos, sin = rope_tables(jnp.zeros((1, 4, 3), jnp.int32), AXES, THETA)
  np.testing.assert_array_equal(np.asarray(apply_rope(jnp.asarray(x), cos, sin)),
                                x)


def test_scores_depend_on_relative_position_only():
  rng = np.random.default_rng(2)
  q, k = rng.standard_normal((2, 1, 1, 1, 16)).astype(np.float32)
  def score(pq, pk):
    rq = apply_rope(jnp.asarray(q), *rope_tables(jnp.asarray([[pq]]), AXES, THETA))
    rk = apply_rope(jnp.asarray(k), *rope_tables(jnp.asarray([[pk]]), AXES, THETA))
    return float(jnp.sum(rq * rk))
  base = score((3, 1, 2), (1, 0, 5))
  shifted = score((3 + 40, 1 + 40, 2 + 40), (1 + 40, 0 + 40, 5 + 40))
  assert abs(base - shifted) < 1e-4
  assert abs(base - score((4, 1, 2), (1, 0, 5))) > 1e-3      # not trivial


@pytest.mark.parametrize("axes, head_dim, msg", [
    ((4, 6, 4), 16, "sums to 14"),
    ((4, 6), 10, "3 entries"),
    ((4, 5, 7), 16, "even"),
])
def test_bad_axes(axes, head_dim, msg):
  with pytest.raises(ValueError, match=msg):
    validate_axes(axes, head_dim)
