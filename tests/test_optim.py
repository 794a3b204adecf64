"""The update rules of `optim.name`, against references built independently:
optax's own 2D Muon for each layer of a scanned stack, and Adam's first step
worked out by hand (m / sqrt(v) = g / |g|)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from _util import tiny_config
from lct_jax import configlib
from lct_jax.training import abstract_model, optim


def _muon_config(**optim_fields):
  c = tiny_config()
  c.optim.name = "muon"
  c.optim.clip_norm = 0.0          # the references below are unclipped
  c.optim.warmup_steps = 0
  c.optim.decay = "constant"
  c.optim.weight_decay = 0.0
  for k, v in optim_fields.items():
    c.optim[k] = v
  return c


def test_muon_takes_exactly_the_block_matrices():
  _, params = abstract_model(tiny_config())
  dims = optim.muon_dimension_numbers(params)
  is_dn = lambda x: x is None or isinstance(x, optax.contrib.MuonDimensionNumbers)
  chosen = {jax.tree_util.keystr(p) for p, d in
            jax.tree_util.tree_flatten_with_path(dims, is_leaf=is_dn)[0]
            if d is not None}
  # Every kernel under transformer_blocks, nothing else: no embedding, no
  # output projection, no bias or norm weight.
  expected = {jax.tree_util.keystr(p) for p, x in
              jax.tree_util.tree_flatten_with_path(params)[0]
              if "transformer_blocks" in jax.tree_util.keystr(p)
              and jax.tree_util.keystr(p).endswith("['kernel']")}
  assert expected and chosen == expected
  assert not any("embed" in name or "proj_out" in name for name in chosen)


def test_a_scanned_stack_is_orthogonalised_layer_by_layer():
  c = _muon_config(lr=1e-2)
  tx = optim.optimizer_for(c).tx
  rng = np.random.default_rng(0)
  # A scanned [layers, fan_in, fan_out] block kernel and an embedding.
  g_stack = jnp.asarray(rng.normal(size=(3, 16, 24)), jnp.float32)
  g_embed = jnp.asarray(rng.normal(size=(10, 8)), jnp.float32)
  params = {"transformer_blocks": {"attn": {"kernel": jnp.zeros((3, 16, 24))}},
            "x_embedder": {"embedding": jnp.zeros((10, 8))}}
  grads = {"transformer_blocks": {"attn": {"kernel": g_stack}},
           "x_embedder": {"embedding": g_embed}}
  updates, _ = tx.update(grads, tx.init(params), params)

  # Reference: optax's default Muon on each layer's 2D matrix alone.
  ref_tx = optax.contrib.muon(1e-2, beta=c.optim.muon_beta, eps=c.optim.eps,
                              consistent_rms=optim.MUON_CONSISTENT_RMS)
  for layer in range(3):
    p2 = {"w": jnp.zeros((16, 24))}
    ref, _ = ref_tx.update({"w": g_stack[layer]}, ref_tx.init(p2), p2)
    np.testing.assert_allclose(
        updates["transformer_blocks"]["attn"]["kernel"][layer], ref["w"],
        rtol=1e-5, atol=1e-7)
  # Orthogonalised: the update's singular values are nearly equal where the
  # gradient's spread widely (Newton-Schulz is approximate: within ~0.7-1.2).
  sv = np.linalg.svd(np.asarray(updates["transformer_blocks"]["attn"]
                                ["kernel"][0]), compute_uv=False)
  assert sv.max() / sv.min() < 2.0
  sv_g = np.linalg.svd(np.asarray(g_stack[0]), compute_uv=False)
  assert sv_g.max() / sv_g.min() > 3.0
  # Everything else is Adam's first step: -lr * g / |g| = -lr * sign(g).
  np.testing.assert_allclose(updates["x_embedder"]["embedding"],
                             -1e-2 * np.sign(g_embed), rtol=1e-4)


def test_muon_rms_matches_the_adamw_scale():
  # An orthogonal n x n matrix has RMS 1 / sqrt(n); consistent_rms scales
  # it by 0.2 * sqrt(n), so the update's RMS is 0.2 * lr, AdamW's typical
  # size (Newton-Schulz leaves singular values within ~0.7-1.2 of 1).
  c = _muon_config(lr=1.0)
  tx = optim.optimizer_for(c).tx
  g = jnp.asarray(np.random.default_rng(1).normal(size=(32, 32)), jnp.float32)
  params = {"transformer_blocks": {"ff": {"kernel": jnp.zeros((32, 32))}}}
  u, _ = tx.update({"transformer_blocks": {"ff": {"kernel": g}}},
                   tx.init(params), params)
  rms = float(jnp.sqrt(jnp.mean(jnp.square(u["transformer_blocks"]["ff"]
                                           ["kernel"]))))
  assert rms == pytest.approx(optim.MUON_CONSISTENT_RMS, rel=0.25)


def test_unknown_optimizer_is_named():
  c = tiny_config()
  c.optim.name = "sgd"
  with pytest.raises(ValueError, match="optim.name"):
    configlib.validate(c)
