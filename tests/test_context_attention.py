"""Context-parallel attention on 8 fake CPU devices against the dense reference.

The reference is `attend_dense` on one device (no mesh); the strategies run
under meshes with a context axis, the sequence sharded over it.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lct_jax.attention import GroupMask, attend, context, striping
from lct_jax.parallel import make_mesh

B, H, D = 2, 8, 8
# A scene-like sequence: 3 video runs of 6 tokens (groups 1..3), then 4 text
# runs of 3 tokens (groups 0..3): 30 tokens, not a multiple of 4.
SHAPES = ((3, 6), (4, 3))
IDS_PLAIN = np.concatenate([np.repeat([1, 2, 3], 6), np.repeat([0, 1, 2, 3], 3)])


def _inputs(n_stripe):
  """q, k, v, kv_valid and ids in plain order (n_stripe=None) or striped."""
  rng = np.random.default_rng(0)
  S = len(IDS_PLAIN)
  q, k, v = (rng.standard_normal((B, S, H, D)).astype(np.float32)
             for _ in range(3))
  valid = rng.random((B, S)) > 0.25
  valid[1, 6:12] = False        # a padded shot
  valid[0, 18:21] = False       # an empty prompt
  ids = IDS_PLAIN
  if n_stripe is not None:
    split = lambda x: [x[:, :18].reshape(B, 3, 6, *x.shape[2:]),
                       x[:, 18:].reshape(B, 4, 3, *x.shape[2:])]
    q, k, v, valid = (striping.stripe(split(x), n_stripe) for x in
                      (q, k, v, valid))
    ids = striping.striped_ids(IDS_PLAIN, SHAPES, n_stripe)
  return (jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(valid),
          ids)


def _loss_and_grads(impl, strategy, causal, q, k, v, valid, ids):
  w = jnp.asarray(np.random.default_rng(1).standard_normal(q.shape),
                  jnp.float32)

  def loss(q, k, v):
    mask = GroupMask(ids, ids, valid, causal)
    o = attend(q, k, v, mask, impl=impl, block_q=4, block_kv=4,
               context_strategy=strategy)
    return jnp.sum(jnp.sin(o) * w), o

  (_, o), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2),
                                             has_aux=True))(q, k, v)
  return [np.asarray(x) for x in (o, *grads)]


def _rel(a, b):
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@functools.lru_cache(maxsize=None)
def _reference(causal, n_stripe):
  return _loss_and_grads("dense", None, causal, *_inputs(n_stripe))


@pytest.mark.parametrize("strategy", context.STRATEGIES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("mesh_shape,n_stripe", [
    ((1, 2, 4, 1), None),       # plain order, 30 tokens padded to 32
    ((1, 1, 4, 2), 4),          # striped order, heads also over 'tensor'
])
def test_strategy_equals_dense_reference(strategy, causal, mesh_shape,
                                         n_stripe):
  ref = _reference(causal, n_stripe)
  mesh = make_mesh(dict(zip(("data", "fsdp", "context", "tensor"),
                            mesh_shape)))
  with jax.set_mesh(mesh):
    got = _loss_and_grads("blockwise", strategy, causal, *_inputs(n_stripe))
  for name, a, r in zip(("out", "dq", "dk", "dv"), got, ref):
    assert _rel(a, r) <= 1e-5, (name, _rel(a, r))


@pytest.mark.parametrize("strategy", context.STRATEGIES)
def test_shorter_queries_than_keys_equal_dense_reference(strategy):
  """The KV cache's call: one new shot's 13 queries (group 3) against 30
  keys of the history and itself, neither a multiple of the axis."""
  q_all, k, v, valid, ids = _inputs(None)
  q = q_all[:, 5:18]
  q_ids = np.full(13, 3)
  w = jnp.asarray(np.random.default_rng(2).standard_normal(q.shape),
                  jnp.float32)

  def run(impl, strategy):
    def loss(q, k, v):
      o = attend(q, k, v, GroupMask(q_ids, ids, valid, True), impl=impl,
                 block_q=4, block_kv=4, context_strategy=strategy)
      return jnp.sum(jnp.sin(o) * w), o
    (_, o), grads = jax.jit(jax.value_and_grad(
        loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    return [np.asarray(x) for x in (o, *grads)]

  ref = run("dense", None)
  with jax.set_mesh(make_mesh(dict(data=1, fsdp=1, context=4, tensor=2))):
    got = run("blockwise", strategy)
  for name, a, r in zip(("out", "dq", "dk", "dv"), got, ref):
    assert _rel(a, r) <= 1e-5, (name, _rel(a, r))


@pytest.mark.parametrize("strategy,collective,absent", [
    ("ring", "collective-permute", "all-gather"),
    ("ulysses", "all-to-all", "collective-permute"),
    ("all_gather", "all-gather", "collective-permute"),
])
def test_strategy_uses_its_collective(strategy, collective, absent):
  """The compiled forward moves K/V the way the strategy says."""
  q, k, v, valid, ids = _inputs(8)
  mask = GroupMask(ids, ids, valid, True)
  mesh = make_mesh(dict(data=1, fsdp=1, context=8, tensor=1))
  with jax.set_mesh(mesh):
    fn = jax.jit(lambda q, k, v: attend(q, k, v, mask, block_q=4, block_kv=4,
                                        context_strategy=strategy))
    hlo = fn.lower(q, k, v).compile().as_text()
  assert collective in hlo
  # ulysses gathers only the [B, S] key-validity mask, as an all-gather.
  assert absent not in hlo


def test_striped_order_balances_context_causal_work():
  n = 4
  striped = striping.striped_ids(IDS_PLAIN, SHAPES, n)
  work = context.device_work(striped, striped, n, causal=True)
  assert work.min() == work.max() > 0
  plain = context.device_work(IDS_PLAIN, IDS_PLAIN, n, causal=True)
  assert plain.max() >= 1.5 * plain.min()
  # Every device's chunk holds the same groups: one static schedule.
  assert (striped.reshape(n, -1) == striped.reshape(n, -1)[:1]).all()


def test_stripe_round_trips_and_is_plain_order_for_one_device():
  x = np.arange(2 * 30).reshape(2, 30)
  parts = [x[:, :18].reshape(2, 3, 6), x[:, 18:].reshape(2, 4, 3)]
  np.testing.assert_array_equal(striping.stripe(parts, 1), x)
  for n in (2, 4, 8):
    back = striping.unstripe(striping.stripe(parts, n), SHAPES, n)
    for a, b in zip(back, parts):
      np.testing.assert_array_equal(a, b)


def test_bad_context_setups_fail_before_compiling():
  q, k, v, valid, ids = _inputs(None)
  mask = GroupMask(ids, ids, valid, True)
  mesh = make_mesh(dict(data=1, fsdp=1, context=8, tensor=1))
  with jax.set_mesh(mesh):
    # 6 heads over 8 context devices.
    with pytest.raises(ValueError, match="ulysses.*divisible by the context"):
      jax.jit(lambda q, k, v: attend(
          q[:, :, :6], k[:, :, :6], v[:, :, :6], mask,
          context_strategy="ulysses")).lower(q, k, v)
    # 4 tokens over 8 context devices.
    short = GroupMask(ids[:4], ids[:4], valid[:, :4], True)
    with pytest.raises(ValueError, match="larger than the sequence"):
      jax.jit(lambda q, k, v: attend(
          q[:, :4], k[:, :4], v[:, :4], short,
          context_strategy="ring")).lower(q, k, v)
    with pytest.raises(ValueError, match="not one of"):
      jax.jit(lambda q, k, v: attend(q, k, v, mask,
                                     context_strategy="tree")).lower(q, k, v)


@pytest.mark.parametrize("strategy", ["all_gather", "ulysses"])
@pytest.mark.parametrize("causal,run", [(False, 768), (True, 768),
                                        (False, 700)])
def test_splash_as_the_local_kernel_equals_dense(strategy, causal, run,
                                                 monkeypatch):
  # Splash (interpret mode) per device under a context axis of 4, on striped
  # scene ids: 2 shots of 768 tokens and 4 prompts of 128, 2048 tokens, so
  # that per-device lengths are multiples of splash's 128; or shots of 700,
  # 1912 tokens, padded to 2048 with keys never attended.
  from lct_jax.attention import accel, dense  # pylint: disable=g-import-not-at-top
  calls = []
  real = accel.attend_splash
  monkeypatch.setattr(accel, "attend_splash",
                      lambda *a, **k: calls.append(1) or real(*a, **k))
  shapes = ((2, run), (4, 128))
  ids = np.concatenate([np.repeat([1, 2], run), np.repeat([0, 1, 2, 3], 128)])
  ids = striping.striped_ids(ids, shapes, 4)
  rng = np.random.default_rng(0)
  S = len(ids)
  q, k, v = (jnp.asarray(rng.standard_normal((1, S, 4, 16)), jnp.float32)
             for _ in range(3))
  valid = jnp.asarray(rng.random((1, S)) > 0.2)
  mesh = make_mesh(dict(data=1, fsdp=1, context=4, tensor=1),
                   jax.devices()[:4])
  mask = GroupMask(ids, ids, valid, causal)
  with jax.set_mesh(mesh):
    got = jax.jit(lambda q, k, v, valid: context.attend_context(
        q, k, v, GroupMask(ids, ids, valid, causal), strategy=strategy,
        block_q=128, block_kv=128, local="splash", interpret=True))(
            q, k, v, valid)
  ref = dense.attend_dense(q, k, v, mask)
  assert calls, "splash did not run"
  assert _rel(np.asarray(got), np.asarray(ref)) <= 1e-5
