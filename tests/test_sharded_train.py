"""The jitted train step and checkpoints under meshes with a context axis.

Reference: the same step on one device, no mesh. Each mesh also picks a
context strategy, so every strategy runs inside a full train step.
"""
import functools

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from _util import tiny_config
from lct_jax import batch as batch_lib
from lct_jax.data.sharding import batch_sharding
from lct_jax.parallel import make_mesh
from lct_jax.model.sharding import param_shardings, state_shardings
from lct_jax.training import (create_train_state, init_model, make_train_step,
                              optim)

AXES = ("data", "fsdp", "context", "tensor")
BATCH = 4


def _config(strategy="ring", mask="context_causal"):
  c = tiny_config()
  c.model.attention_mask = mask
  c.model.context_strategy = strategy
  c.flow.p_frame = c.flow.p_text = 0.3
  c.optim.lr = 1e-3
  # Adam's first step is g / (|g| + eps): with a tiny eps it amplifies the
  # float32 noise of near-zero gradients into whole-lr differences. A large
  # eps keeps the update proportional to the gradient, which is compared.
  c.optim.eps = 1e-3
  c.train.batch_size = BATCH
  return c


def _run_step(c, mesh=None):
  """One train step -> (loss, grad_norm, params before, params after)."""
  graphdef, params = init_model(c)
  state = create_train_state(c, params)
  batch = batch_lib.random_batch(c, 3, BATCH)
  rng = jax.random.key(7)
  step = make_train_step(graphdef, c, donate=False)
  if mesh is None:
    new, metrics = step(state, batch, rng)
  else:
    with jax.set_mesh(mesh):
      state = jax.device_put(state, state_shardings(c, state, mesh))
      batch = jax.device_put(batch, batch_sharding(mesh))
      new, metrics = step(state, batch, rng)
      # The strategy really ran (not XLA's own partitioning of attention).
      collective = {"ring": "collective_permute", "ulysses": "all_to_all",
                    "all_gather": "all_gather"}[c.model.context_strategy]
      assert f"stablehlo.{collective}" in step.lower(state, batch,
                                                     rng).as_text()
      # Parameters keep their FSDP / tensor sharding through the step.
      for x, s in zip(jax.tree.leaves(new.params),
                      jax.tree.leaves(param_shardings(c, params, mesh))):
        assert x.sharding.is_equivalent_to(s, x.ndim), (x.sharding, s)
  return (float(metrics["loss"]), float(metrics["grad_norm"]),
          jax.device_get(params), jax.device_get(new.params))


@functools.lru_cache(maxsize=None)
def _reference(mask):
  return _run_step(_config(mask=mask))


@pytest.mark.parametrize("mesh_shape,strategy,mask", [
    ((1, 1, 8, 1), "ring", "context_causal"),
    ((2, 2, 2, 1), "ulysses", "bidirectional"),
    ((1, 2, 2, 2), "all_gather", "context_causal"),
])
def test_train_step_under_mesh_equals_single_device(mesh_shape, strategy,
                                                    mask):
  loss_ref, gn_ref, p0, p_ref = _reference(mask)
  mesh = make_mesh(dict(zip(AXES, mesh_shape)))
  loss, gn, _, p = _run_step(_config(strategy, mask), mesh)
  assert abs(loss - loss_ref) <= 1e-5 * abs(loss_ref), (loss, loss_ref)
  assert abs(gn - gn_ref) <= 1e-5 * abs(gn_ref), (gn, gn_ref)
  # Compare the updates (params moved by <= lr per entry under Adam).
  lr = _config().optim.lr
  worst = 0.0
  for a, r, a0 in zip(jax.tree.leaves(p), jax.tree.leaves(p_ref),
                      jax.tree.leaves(p0)):
    worst = max(worst, float(np.max(np.abs((a - a0) - (r - a0)))))
  assert worst <= 1e-3 * lr, worst


def test_muon_state_is_sharded_like_the_params_and_steps_as_on_one_device():
  # Muon's moments live under an optax partition: each part's moments are
  # shaped like the params with the other part's leaves masked. They must
  # still take their parameter's FSDP / tensor sharding, not be replicated.
  c = _config("all_gather", "context_causal")
  c.optim.name = "muon"
  mesh = make_mesh(dict(zip(AXES, (1, 2, 2, 2))))
  _, params = init_model(c)
  state = create_train_state(c, params)
  shardings = state_shardings(c, state, mesh)
  by_keys = {tuple(str(k) for k in path): s for path, s in
             jax.tree_util.tree_flatten_with_path(
                 param_shardings(c, params, mesh))[0]}
  matched = sharded = 0
  for path, s in jax.tree_util.tree_flatten_with_path(shardings.opt_state)[0]:
    keys = tuple(str(k) for k in path)
    hits = [by_keys[keys[-n:]] for n in range(1, len(keys) + 1)
            if keys[-n:] in by_keys]
    if not hits:
      continue                      # counts and other scalars
    matched += 1
    assert s == hits[-1], (keys, s, hits[-1])
    sharded += any(a is not None for a in s.spec)
  # Muon keeps one moment per matrix, Adam two per other leaf.
  n_muon = sum(d is not None for d in jax.tree.leaves(
      optim.muon_dimension_numbers(params), is_leaf=lambda d: d is None
      or isinstance(d, optax.contrib.MuonDimensionNumbers)))
  assert n_muon > 0
  assert matched == n_muon + 2 * (len(jax.tree.leaves(params)) - n_muon)
  assert sharded > 0

  loss_ref, gn_ref, p0, p_ref = _run_step(c)
  loss, gn, _, p = _run_step(c, mesh)
  assert abs(loss - loss_ref) <= 1e-5 * abs(loss_ref), (loss, loss_ref)
  assert abs(gn - gn_ref) <= 1e-5 * abs(gn_ref), (gn, gn_ref)
  worst = max(float(np.max(np.abs((a - a0) - (r - a0))))
              for a, r, a0 in zip(jax.tree.leaves(p), jax.tree.leaves(p_ref),
                                  jax.tree.leaves(p0)))
  assert worst <= 1e-3 * c.optim.lr, worst


def test_bad_mesh_for_config_fails_before_compiling():
  c = _config("ulysses")            # 2 heads over 8 context devices
  graphdef, params = init_model(c)
  step = make_train_step(graphdef, c, donate=False)
  state = create_train_state(c, params)
  batch = batch_lib.random_batch(c, 3, BATCH)
  with jax.set_mesh(make_mesh(dict(data=1, fsdp=1, context=8, tensor=1))):
    with pytest.raises(ValueError, match="ulysses.*divisible by the context"):
      step.lower(state, batch, jax.random.key(0))
  with pytest.raises(ValueError, match="has 4 devices but 8 are available"):
    make_mesh(dict(data=2, fsdp=1, context=2, tensor=1))


def test_checkpoint_saved_under_one_mesh_restores_under_another(tmp_path):
  """orbax directly: params saved with (2, 2, 2, 1) shardings come back
  under (1, 2, 2, 2) shardings with the same values."""
  c = _config()
  _, params = init_model(c)
  mesh_a = make_mesh(dict(data=2, fsdp=2, context=2, tensor=1))
  mesh_b = make_mesh(dict(data=1, fsdp=2, context=2, tensor=2))
  saved = jax.device_put(params, param_shardings(c, params, mesh_a))
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(tmp_path / "params", saved)
    ckpt.wait_until_finished()
    shardings_b = param_shardings(c, params, mesh_b)
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        params, shardings_b)
    restored = ckpt.restore(tmp_path / "params", abstract)
  for r, x, s in zip(jax.tree.leaves(restored), jax.tree.leaves(params),
                     jax.tree.leaves(shardings_b)):
    assert r.sharding == s
    np.testing.assert_array_equal(np.asarray(r), np.asarray(x))
  kernel = restored["transformer_blocks"]["attn"]["to_q"]["kernel"]
  assert kernel.sharding.spec == jax.sharding.PartitionSpec(
      None, "fsdp", "tensor")


def test_sampler_forward_batch_of_one_under_context_mesh():
  """What the samplers call: the forward at batch 1, which the batch axes
  (data 2) cannot split, with remat on, equals one device."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  c = _config("ring")
  c.model.remat_policy = "full"
  graphdef, params = init_model(c)
  b = batch_lib.random_batch(c, 0, 1)
  t = np.random.default_rng(0).random((1, c.scene.max_shots)).astype(
      np.float32)
  fwd = lambda p, b, t: nnx.merge(graphdef, p)(
      b["latents"], t, b["text"], b["text_len"], b["num_frames"])
  ref = np.asarray(jax.jit(fwd)(params, b, t))
  mesh = make_mesh(dict(data=2, fsdp=1, context=4, tensor=1))
  with jax.set_mesh(mesh):
    out = np.asarray(jax.jit(fwd)(
        jax.device_put(params, param_shardings(c, params, mesh)), b, t))
  assert np.max(np.abs(out - ref)) <= 1e-5 * np.max(np.abs(ref))
