"""The accelerator kernels' mask handling, run on CPU against `attend_dense`.

cuDNN's key-prefix formulation runs here through the same
`jax.nn.dot_product_attention` call with implementation='xla'; splash runs
its Pallas kernel in interpret mode. The GPU/TPU kernels themselves need
their hardware (benchmarks/gpu_step.py).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lct_jax.attention import GroupMask, accel, attend, attend_dense, striping
from lct_jax.attention import dispatch

B, H, D = 2, 2, 16
SHAPES = ((3, 64), (4, 16))         # 3 shots of 64 tokens, 4 prompts of 16


def _inputs(stripe):
  rng = np.random.default_rng(0)
  ids = np.concatenate([np.repeat([1, 2, 3], 64), np.repeat([0, 1, 2, 3], 16)])
  if stripe:   # groups no longer contiguous: the per-group gather path
    ids = striping.striped_ids(ids, SHAPES, 4)
  S = len(ids)
  q, k, v = (jnp.asarray(rng.standard_normal((B, S, H, D)), jnp.float32)
             for _ in range(3))
  valid = rng.random((B, S)) > 0.2
  valid[0, ids == 0] = False        # no prompt: group 0 rows attend nothing
  return q, k, v, jnp.asarray(valid), ids


def _rel(a, b):
  return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("stripe", [False, True])
def test_key_prefix_formulation_equals_dense(causal, stripe):
  q, k, v, valid, ids = _inputs(stripe)
  mask = GroupMask(ids, ids, valid, causal)
  w = jnp.asarray(np.random.default_rng(1).standard_normal(q.shape),
                  jnp.float32)

  def loss(fn):
    return jax.jit(jax.value_and_grad(
        lambda q, k, v: jnp.sum(fn(q, k, v, mask) * w), argnums=(0, 1, 2)))(
            q, k, v)

  got = loss(lambda *a: accel.attend_key_prefixes(*a, implementation="xla"))
  ref = loss(attend_dense)
  for a, r in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
    assert _rel(a, r) <= 1e-5


def test_splash_staircase_block_mask_and_interpret_kernel():
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask_info as mi  # pylint: disable=g-import-not-at-top
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm  # pylint: disable=g-import-not-at-top
  q, k, v, valid, ids = _inputs(False)
  mask = GroupMask(ids, ids, valid, True)
  smask = accel.splash_mask(mask)
  np.testing.assert_array_equal(smask[:, :],
                                ids[None, :] <= ids[:, None])
  # Block-sparse: with 64-blocks, shot 1's queries skip shots 2 and 3.
  info, _ = mi.process_mask(sm.MultiHeadMask([smask]), (64, 64))
  num_blocks = (len(ids) // 64) ** 2
  assert info.data_next is not None
  visited = int(np.sum(np.asarray(info.block_mask) > 0))
  assert 0 < visited < num_blocks
  out = accel.attend_splash(q, k, v, mask, block=128, interpret=True)
  assert _rel(out, attend_dense(q, k, v, mask)) <= 1e-5


def test_fallback_rules_on_cpu():
  q, k, v, valid, ids = _inputs(False)
  assert dispatch.resolve_impl("auto", q, k) == "blockwise"
  with pytest.raises(ValueError, match="cudnn.*not 'gpu'"):
    attend(q, k, v, GroupMask(ids, ids, valid, True), impl="cudnn")
  with pytest.raises(ValueError, match="splash.*not 'tpu'"):
    attend(q, k, v, GroupMask(ids, ids, valid, True), impl="splash")


@pytest.mark.parametrize("causal", [False, True])
def test_splash_under_a_mesh_runs_per_device_and_equals_dense(causal):
  # Batch over fsdp, heads over tensor: splash runs in a shard_map (a Mosaic
  # kernel cannot be partitioned automatically); interpret mode on CPU.
  from lct_jax.parallel import make_mesh  # pylint: disable=g-import-not-at-top
  q, k, v, valid, ids = _inputs(False)
  mask = GroupMask(ids, ids, valid, causal)
  mesh = make_mesh(dict(data=1, fsdp=2, context=1, tensor=2),
                   jax.devices()[:4])
  with jax.set_mesh(mesh):
    got = jax.jit(lambda q, k, v, valid: accel.attend_splash(
        q, k, v, GroupMask(ids, ids, valid, causal), block=128,
        interpret=True))(q, k, v, valid)
  assert _rel(got, attend_dense(q, k, v, mask)) <= 1e-5


def test_staircase_mask_blocks_equal_the_rule():
  # Striped ids (groups not contiguous): every block the kernel reads, full,
  # empty or partial, equals kv_group <= q_group.
  ids = striping.striped_ids(
      np.concatenate([np.repeat([1, 2, 3], 64), np.repeat([0, 1, 2, 3], 16)]),
      SHAPES, 4)
  smask = accel.splash_mask(GroupMask(ids, ids, np.ones((1, len(ids)), bool),
                                      True))
  dense = ids[None, :] <= ids[:, None]
  for i in range(0, len(ids), 64):
    for j in range(0, len(ids), 32):
      np.testing.assert_array_equal(smask[i:i + 64, j:j + 32],
                                    dense[i:i + 64, j:j + 32])
  assert smask == accel.splash_mask(GroupMask(ids, ids, np.ones(
      (1, len(ids)), bool), True))
