"""The jitted train step: overfitting, accumulation, precision, bad input."""
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from _util import tiny_config
from lct_jax import batch as batch_lib
from lct_jax import configlib
from lct_jax.training import (abstract_model, compute_grads, count_params,
                              create_train_state, init_model, make_train_step)
from lct_jax.training.step import ema_decay_at

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_config(name, arg=None):
  path = str(ROOT / "configs" / name)
  return configlib.load(path if arg is None else f"{path}:{arg}")


def test_overfits_one_fixed_scene():
  c = tiny_config()
  c.model.zero_init = True               # the real init
  c.optim.lr, c.optim.decay, c.optim.clip_norm = 3e-3, "constant", 0.0
  c.optim.ema_decay = 0.0
  c.train.batch_size = 1
  graphdef, params = init_model(c)
  state = create_train_state(c, params)
  step = make_train_step(graphdef, c)
  batch = batch_lib.random_batch(c, 0, 1, min_shots=2)
  rng = jax.random.key(0)                # fixed noise and timesteps
  losses = []
  for _ in range(300):
    state, metrics = step(state, batch, rng)
    losses.append(float(metrics["loss"]))
  assert np.all(np.isfinite(losses))
  assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])
  # EMA with decay 0 follows the parameters exactly.
  assert jax.tree.all(jax.tree.map(np.array_equal, state.ema_params,
                                   state.params))


def test_ema_warms_up_from_the_initial_weights():
  """With ema_decay 0.999 the first updates use decays 1/10 and 2/11 (not
  0.999): by hand, ema_2 = d1 (d0 p0 + (1 - d0) p1) + (1 - d1) p2."""
  c = tiny_config()
  c.optim.ema_decay = 0.999
  graphdef, params = init_model(c)
  state = create_train_state(c, params)
  step = make_train_step(graphdef, c)
  batch = batch_lib.random_batch(c, 0, c.train.batch_size, min_shots=2)
  host = lambda tree: jax.tree.map(np.array, tree)   # the step donates state
  seen = [host(state.params)]
  for i in range(2):
    state, _ = step(state, batch, jax.random.key(i))
    seen.append(host(state.params))
  d0, d1 = 1 / 10, 2 / 11
  want = jax.tree.map(
      lambda p0, p1, p2: d1 * (d0 * p0 + (1 - d0) * p1) + (1 - d1) * p2,
      *seen)
  jax.tree.map(lambda a, b: assert_close(a, b, 1e-6), state.ema_params, want)
  # Far into a run the configured decay holds.
  assert float(ema_decay_at(10 ** 6, 0.999)) == np.float32(0.999)


def assert_close(a, b, tol):
  """Float32 tolerance relative to the tensor's scale (sums are reordered)."""
  a, b = np.asarray(a), np.asarray(b)
  assert np.max(np.abs(a - b)) <= tol * max(np.max(np.abs(b)), 1e-12)


def test_grad_accumulation_equals_full_batch():
  """k = 2 microbatches give the full batch's loss and gradients.

  Augmentations are on, so this also checks that every scene draws the same
  noise, timesteps and augmentations whichever microbatch it lands in.
  (Parameters after AdamW are not compared: its first step, g / (|g| + eps),
  amplifies float32 noise in near-zero gradients.)
  """
  graphdef, params = init_model(tiny_config())
  rng = jax.random.key(3)
  keys_B = jax.random.split(rng, 4)
  out = {}
  for k in (1, 2):
    c = tiny_config()
    c.train.batch_size, c.train.grad_accum = 4, k
    c.flow.p_frame, c.flow.p_text, c.flow.p_single = 0.5, 0.3, 0.3
    batch = batch_lib.random_batch(c, 1, 4)
    out[k] = jax.jit(lambda p, b, kb: compute_grads(
        p, b, kb, graphdef=graphdef, config=c))(params, batch, keys_B)
  (ls1, n1, g1), (ls2, n2, g2) = out[1], out[2]
  assert float(n1) == float(n2) > 0
  assert_close(ls2, ls1, 1e-5)
  for a, b in zip(jax.tree.leaves(g2), jax.tree.leaves(g1)):
    assert_close(a, b, 1e-5)
  assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(g1)) > 0
  # The jitted step with k = 2 reports the same loss and gradient norm.
  step = make_train_step(graphdef, c, donate=False)
  _, m = step(create_train_state(c, params), batch, rng)
  assert_close(m["loss"], ls1 / n1, 1e-5)
  assert_close(m["grad_norm"], optax.tree.norm(
      jax.tree.map(lambda g: g / n1, g1)), 1e-5)


def test_remat_does_not_change_gradients():
  c = tiny_config()
  graphdef, params = init_model(c)
  batch = batch_lib.random_batch(c, 2, 2)
  keys_B = jax.random.split(jax.random.key(0), 2)
  grads = {}
  for policy in ("none", "full"):
    c.model.remat_policy = policy
    graphdef, _ = init_model(c)
    _, _, grads[policy] = jax.jit(lambda p, b, k: compute_grads(
        p, b, k, graphdef=graphdef, config=c))(params, batch, keys_B)
  for a, b in zip(jax.tree.leaves(grads["full"]),
                  jax.tree.leaves(grads["none"])):
    assert_close(a, b, 1e-5)


def test_bad_batches_fail_before_tracing():
  c = tiny_config()
  graphdef, params = init_model(c)
  state = create_train_state(c, params)
  step = make_train_step(graphdef, c, donate=False)
  good = batch_lib.random_batch(c, 0, 2)
  cases = [
      (dict(good, latents=np.zeros((2, 4, 3, 4, 4, 2), np.float32)),
       "4 shots, more than scene.max_shots=3"),
      (dict(good, latents=np.zeros((2, 3, 3, 4, 6, 2), np.float32)),
       r"batch\['latents'\] has shape \(2, 3, 3, 4, 6, 2\)"),
      (dict(good, text=np.zeros((2, 4, 5), np.int32)),
       r"batch\['text'\] has shape \(2, 4, 5\)"),
      (dict(good, num_frames=np.array([[0, 2, 0], [1, 0, 0]], np.int32)),
       "prefix"),
      (dict(good, text_len=np.full((2, 4), 9, np.int32)), "max_text_len=4"),
      ({k: v for k, v in good.items() if k != "text_len"}, "missing 'text_len'"),
      (dict(good, extra=np.zeros(2)), "unknown batch keys"),
      (dict(good, latents=good["latents"][:1]), "shape"),
  ]
  for bad, msg in cases:
    with pytest.raises(ValueError, match=msg):
      step(state, bad, jax.random.key(0))
  assert step.cache_size() == 0   # nothing was traced


@pytest.mark.parametrize("edit, msg", [
    (lambda c: setattr(c.model, "rope_axes_dim", (4, 6, 4)),
     r"rope_axes_dim=\(4, 6, 4\) sums to 14, but head_dim is 16"),
    (lambda c: setattr(c.scene, "height", 5),
     "scene.height=5 is not divisible by the spatial patch size patch=2"),
    (lambda c: setattr(c.model, "width", 48),
     "model.width=48 must equal"),
    (lambda c: setattr(c.model, "attention_mask", "causal"),
     "model.attention_mask='causal'"),
    (lambda c: setattr(c.train, "grad_accum", 3),
     "train.batch_size=2 is not divisible by train.grad_accum=3"),
])
def test_bad_config_named(edit, msg):
  c = tiny_config()
  edit(c)
  with pytest.raises(ValueError, match=msg):
    init_model(c)


def test_paper_scale_config_abstract_init():
  for stage in ("text_rope", "lct", "causal"):
    c = load_config("lct_3b.py", stage)
    _, params = abstract_model(c)           # ShapeDtypeStructs, no memory
    n = count_params(params)
    assert 2.8e9 < n < 3.3e9, n
    assert all(isinstance(x, jax.ShapeDtypeStruct)
               for x in jax.tree.leaves(params))
  assert c.model.attention_mask == "context_causal"
  assert load_config("lct_3b.py", "text_rope").scene.max_shots == 1
  assert load_config("lct_3b.py", "lct").scene.max_shots == 9


def test_demo_config_trains_in_bf16_with_remat():
  c = load_config("demo.py")
  c.train.batch_size = 2
  c.model.compute_dtype, c.model.remat_policy = "bfloat16", "full"
  graphdef, params = init_model(c)
  state = create_train_state(c, params)
  batch = batch_lib.random_batch(c, 0, 2)
  state, m = make_train_step(graphdef, c)(state, batch, jax.random.key(0))
  assert np.isfinite(float(m["loss"])) and int(state.step) == 1
  # Master weights stay float32 whatever the compute dtype.
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.params))


def test_the_optimizer_is_built_once_per_run_config():
  """The train state's and the step's optimizer are one object; another
  learning rate or length is another optimizer."""
  from lct_jax.training import optimizer_for  # pylint: disable=g-import-not-at-top
  c = tiny_config()
  graphdef, _ = init_model(c)
  opt = optimizer_for(c)
  assert optimizer_for(c.copy_and_resolve_references()) is opt
  assert make_train_step(graphdef, c)._tx is opt.tx  # pylint: disable=protected-access
  other = c.copy_and_resolve_references()
  other.optim.lr = c.optim.lr / 2
  assert optimizer_for(other) is not opt
  assert float(optimizer_for(other).schedule(10)) == float(
      opt.schedule(10)) / 2
