"""Tests for lct_jax.attention: blockwise kernel against the dense reference.

Layouts mimic a scene: video slots of shots 1..3, then text slots of groups
0..3 (docs/design.md section 4), with ragged key padding and a padded shot. Small
blocks (16) give many tiles, so static and dynamic skipping both happen.
"""
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lct_jax import attention
from lct_jax.attention import blockwise

HEADS, HEAD_DIM = 2, 8
RTOL = 1e-5
# Video tokens per shot (groups 1..3) and text tokens per group (0..3); none
# a multiple of 16, so tiles straddle groups and the lengths need padding.
VIDEO_LENS = (40, 37, 45)
TEXT_LEN = 11


def scene_groups() -> np.ndarray:
  """int32 [S]: video of shots 1..3, then text slots of groups 0..3."""
  video = [np.full(n, g + 1) for g, n in enumerate(VIDEO_LENS)]
  text = [np.full(TEXT_LEN, g) for g in range(len(VIDEO_LENS) + 1)]
  return np.concatenate(video + text).astype(np.int32)


def scene_valid(groups: np.ndarray) -> np.ndarray:
  """bool [3, S]: ragged text padding per element; element 1 lacks shot 3."""
  is_video = np.arange(groups.size) < sum(VIDEO_LENS)
  text_pos = np.arange(groups.size) - sum(VIDEO_LENS)
  text_used = {0: (11, 5, 8, 3), 1: (2, 11, 6, 1), 2: (7, 9, 11, 4)}
  valid = np.zeros((3, groups.size), dtype=bool)
  for b, used in text_used.items():
    for g, n in enumerate(used):
      slot = text_pos - g * TEXT_LEN
      valid[b] |= ~is_video & (groups == g) & (slot < n)
    valid[b] |= is_video
  valid[1] &= ~(is_video & (groups == 3))  # A whole padded shot.
  return valid


def rand(key, shape, dtype=jnp.float32):
  return jax.random.normal(key, shape, dtype=jnp.float32).astype(dtype)


def qkv(seed, batch, q_len, kv_len, dtype=jnp.float32):
  keys = jax.random.split(jax.random.PRNGKey(seed), 4)
  return (rand(keys[0], (batch, q_len, HEADS, HEAD_DIM), dtype),
          rand(keys[1], (batch, kv_len, HEADS, HEAD_DIM), dtype),
          rand(keys[2], (batch, kv_len, HEADS, HEAD_DIM), dtype),
          rand(keys[3], (batch, q_len, HEADS, HEAD_DIM), jnp.float32))


def rel_err(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def value_and_grads(impl, q, k, v, cotangent, mask, block=16):
  """Output and d<o, cotangent>/d(q, k, v), jitted."""
  def f(q, k, v):
    return attention.attend(q, k, v, mask, impl=impl, block_q=block,
                            block_kv=block)

  def loss(q, k, v):
    return jnp.sum(f(q, k, v).astype(jnp.float32) * cotangent)

  out = jax.jit(f)(q, k, v)
  grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)
  return out, grads


def assert_close(got, want, tol=RTOL):
  for name, a, b in zip(("o", "dq", "dk", "dv"), got, want):
    assert np.all(np.isfinite(np.asarray(a, np.float32))), name
    err = rel_err(a, b)
    assert err <= tol, f"{name}: relative error {err:.2e} > {tol:.0e}"


def flat(out, grads):
  return (out,) + tuple(grads)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("block", [16, 512])
def test_blockwise_matches_dense(causal, block):
  groups = scene_groups()
  mask = attention.GroupMask(groups, groups, scene_valid(groups), causal)
  q, k, v, ct = qkv(0, 3, groups.size, groups.size)
  want = flat(*value_and_grads("dense", q, k, v, ct, mask))
  got = flat(*value_and_grads("blockwise", q, k, v, ct, mask, block))
  assert_close(got, want)


def test_uneven_blocks_and_dynamic_skip_match_dense():
  """Shot 3 padded in every element: its kv tiles are skipped at run time."""
  groups = scene_groups()
  valid = scene_valid(groups)
  valid[:, VIDEO_LENS[0] + VIDEO_LENS[1]:sum(VIDEO_LENS)] = False
  mask = attention.GroupMask(groups, groups, valid, causal=True)
  q, k, v, ct = qkv(1, 3, groups.size, groups.size)
  want = flat(*value_and_grads("dense", q, k, v, ct, mask))

  def f(q, k, v):
    return attention.attend(q, k, v, mask, impl="blockwise", block_q=16,
                            block_kv=8)

  out, vjp = jax.vjp(jax.jit(f), q, k, v)
  assert_close((out,) + vjp(ct.astype(out.dtype)), want)


@pytest.mark.parametrize("impl", ["dense", "blockwise"])
def test_rows_without_keys_are_zero_with_finite_grads(impl):
  groups = scene_groups()
  valid = scene_valid(groups)
  valid[0, groups == 0] = False  # Element 0: group 0 queries see nothing.
  valid[2] = False  # Element 2: nobody sees anything.
  mask = attention.GroupMask(groups, groups, valid, causal=True)
  q, k, v, ct = qkv(2, 3, groups.size, groups.size)
  out, (dq, dk, dv) = value_and_grads(impl, q, k, v, ct, mask)
  for x in (out, dq, dk, dv):
    assert np.all(np.isfinite(np.asarray(x)))
  out, dq = np.asarray(out), np.asarray(dq)
  np.testing.assert_array_equal(out[0, groups == 0], 0.0)
  np.testing.assert_array_equal(out[2], 0.0)
  np.testing.assert_array_equal(dq[0, groups == 0], 0.0)
  np.testing.assert_array_equal(dq[2], 0.0)
  np.testing.assert_array_equal(np.asarray(dk)[2], 0.0)
  assert np.abs(out[1]).min(axis=-1).max() > 0  # Other rows are not zeroed.


@pytest.mark.parametrize("causal", [False, True])
def test_queries_of_one_group_against_longer_keys(causal):
  """Sq != Sk, as when shot 3 is denoised against a KV cache of the scene."""
  groups = scene_groups()
  valid = scene_valid(groups)
  q_rows = np.flatnonzero(groups == 3)
  q_full, k, v, ct_full = qkv(3, 3, groups.size, groups.size)
  q, ct = q_full[:, q_rows], ct_full[:, q_rows]
  mask = attention.GroupMask(groups[q_rows], groups, valid, causal)
  want = flat(*value_and_grads("dense", q, k, v, ct, mask))
  got = flat(*value_and_grads("blockwise", q, k, v, ct, mask))
  assert_close(got, want)
  # And they are the rows of the full-scene attention.
  full_mask = attention.GroupMask(groups, groups, valid, causal)
  full = attention.attend(q_full, k, v, full_mask, block_q=16, block_kv=16)
  assert rel_err(got[0], full[:, q_rows]) <= RTOL


def test_dense_mask_is_the_causal_rule():
  q_group = np.array([0, 2, 1, 1, 3])
  kv_group = np.array([1, 0, 3, 2, 2, 0])
  valid = np.array([[True, True, False, True, True, True],
                    [False, True, True, True, False, True]])
  for causal in (False, True):
    mask = attention.GroupMask(q_group, kv_group, valid, causal)
    want = np.zeros((2, 5, 6), dtype=bool)
    for b, i, j in itertools.product(range(2), range(5), range(6)):
      want[b, i, j] = valid[b, j] and (not causal or kv_group[j] <= q_group[i])
    np.testing.assert_array_equal(np.asarray(mask.dense()), want)


def test_causal_outputs_ignore_later_groups():
  """Perturbing shot 3 keys/values leaves groups 0..2 unchanged (blockwise)."""
  groups = scene_groups()
  mask = attention.GroupMask(groups, groups, scene_valid(groups), causal=True)
  q, k, v, _ = qkv(4, 3, groups.size, groups.size)
  later = jnp.asarray(groups == 3)[None, :, None, None]
  k2 = jnp.where(later, 10.0 * k + 3.0, k)
  v2 = jnp.where(later, -5.0 * v, v)
  f = jax.jit(lambda q, k, v: attention.attend(q, k, v, mask, block_q=16,
                                               block_kv=16))
  out, out2 = np.asarray(f(q, k, v)), np.asarray(f(q, k2, v2))
  earlier = groups < 3
  np.testing.assert_array_equal(out2[:, earlier], out[:, earlier])
  assert np.abs(out2[:, ~earlier] - out[:, ~earlier]).max() > 1e-2


def test_single_group_masks_coincide():
  groups = np.full(50, 1)
  valid = np.arange(50)[None] < np.array([[50], [33]])
  q, k, v, _ = qkv(5, 2, 50, 50)
  outs = [attention.attend(q, k, v, attention.GroupMask(groups, groups, valid,
                                                        c), block_q=16,
                           block_kv=16) for c in (False, True)]
  np.testing.assert_array_equal(np.asarray(outs[0]), np.asarray(outs[1]))


def test_bf16_runs_and_is_close_to_float32():
  groups = scene_groups()
  mask = attention.GroupMask(groups, groups, scene_valid(groups), causal=True)
  q, k, v, ct = qkv(6, 3, groups.size, groups.size)
  want = flat(*value_and_grads("blockwise", q, k, v, ct, mask))
  bf = [x.astype(jnp.bfloat16) for x in (q, k, v)]
  out, grads = value_and_grads("blockwise", *bf, ct, mask)
  assert out.dtype == jnp.bfloat16
  assert all(g.dtype == jnp.bfloat16 for g in grads)
  assert_close(flat(out, grads), want, tol=2e-2)
  dense_out = attention.attend(*bf, mask, impl="dense")
  assert dense_out.dtype == jnp.bfloat16
  assert rel_err(dense_out, want[0]) <= 2e-2


def test_under_scan_and_checkpoint_matches_dense():
  """The model scans over layers with remat; the kernel must survive both."""
  groups = scene_groups()
  mask = attention.GroupMask(groups, groups, scene_valid(groups), causal=True)
  q, k, v, ct = qkv(7, 3, groups.size, groups.size)

  def stack(impl):
    @jax.checkpoint
    def layer(x, _):
      y = attention.attend(x, k, v, mask, impl=impl, block_q=16, block_kv=16)
      return x + y, None

    def loss(x):
      y, _ = jax.lax.scan(layer, x, None, length=2)
      return jnp.sum(y * ct)
    return jax.jit(jax.value_and_grad(loss))(q)

  (l_d, g_d), (l_b, g_b) = stack("dense"), stack("blockwise")
  assert rel_err(l_b, l_d) <= RTOL
  assert rel_err(g_b, g_d) <= RTOL


def test_inside_shard_map_over_heads():
  """Heads sharded (as in Ulysses / tensor parallelism), check_vma on."""
  groups = scene_groups()
  valid = scene_valid(groups)
  q, k, v, ct = qkv(10, 3, groups.size, groups.size)
  mesh = jax.make_mesh((HEADS,), ("tensor",), devices=jax.devices()[:HEADS],
                       axis_types=(jax.sharding.AxisType.Auto,))
  heads = jax.P(None, None, "tensor", None)

  def local(q, k, v, valid):
    mask = attention.GroupMask(groups, groups, valid, causal=True)
    return attention.attend(q, k, v, mask, block_q=16, block_kv=16)

  sharded = jax.shard_map(local, mesh=mesh, out_specs=heads,
                          in_specs=(heads, heads, heads, jax.P()))

  def loss(q, k, v):
    return jnp.sum(sharded(q, k, v, valid) * ct)

  with jax.set_mesh(mesh):
    got = (jax.jit(sharded)(q, k, v, valid),) + jax.jit(
        jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)
  mask = attention.GroupMask(groups, groups, valid, causal=True)
  assert_close(got, flat(*value_and_grads("dense", q, k, v, ct, mask)))


def test_mask_is_a_pytree_through_jit():
  groups = scene_groups()
  mask = attention.GroupMask(groups, groups, scene_valid(groups), causal=True)
  q, k, v, _ = qkv(8, 3, groups.size, groups.size)
  f = jax.jit(lambda q, k, v, m: attention.attend(q, k, v, m, block_q=16,
                                                  block_kv=16))
  want = attention.attend(q, k, v, mask, impl="dense")
  assert rel_err(f(q, k, v, mask), want) <= RTOL


def test_schedule_skips_tiles_for_four_groups():
  groups = np.repeat(np.arange(4), 48)  # 4 groups of 3 tiles each.
  full = blockwise.tile_schedule(groups, groups, 16, 16, causal=False)
  causal = blockwise.tile_schedule(groups, groups, 16, 16, causal=True)
  assert len(full) == 12 * 12
  # Block lower triangle: sum over q groups g of 3 * 3 * (g + 1).
  assert len(causal) == 9 * (1 + 2 + 3 + 4) < len(full)
  # The scene layout (text after video) skips too.
  scene = scene_groups()
  assert (len(blockwise.tile_schedule(scene, scene, 16, 16, True)) <
          len(blockwise.tile_schedule(scene, scene, 16, 16, False)))


def test_schedule_hand_count():
  # q tiles [1,1] [2,2] [0,2] (max 1, 2, 2); kv tiles [1,1] [2,2] [0,pad]
  # (min 1, 2, 0). Needed iff kv min <= q max: all but (q0, kv1).
  q_group = np.array([1, 1, 2, 2, 0, 2])
  kv_group = np.array([1, 1, 2, 2, 0])
  pairs = blockwise.tile_schedule(q_group, kv_group, 2, 2, causal=True)
  np.testing.assert_array_equal(
      pairs, [[0, 0], [0, 2], [1, 0], [1, 1], [1, 2], [2, 0], [2, 1], [2, 2]])
  # Blocks larger than the sequence are clamped: a single tile pair.
  np.testing.assert_array_equal(
      blockwise.tile_schedule(q_group, kv_group, 512, 512, True), [[0, 0]])
  # Queries that may see no key at all: nothing to schedule, output 0.
  assert blockwise.tile_schedule([0, 0], [1, 2], 2, 2, True).shape == (0, 2)
  q, k, v, _ = qkv(9, 1, 2, 2)
  mask = attention.GroupMask([0, 0], [1, 2], np.ones((1, 2), bool), True)
  np.testing.assert_array_equal(np.asarray(attention.attend(q, k, v, mask)),
                                0.0)


def test_blockwise_memory_is_subquadratic():
  """Compiled fwd+bwd scratch stays far below one Sq x Sk float32 array."""
  seq = 2048
  groups = np.repeat(np.arange(4), seq // 4)
  mask = attention.GroupMask(groups, groups, np.ones((1, seq), bool), True)
  x = jax.ShapeDtypeStruct((1, seq, 1, 16), jnp.float32)

  def loss(q, k, v):
    return jnp.sum(attention.attend(q, k, v, mask, block_q=128, block_kv=128))

  compiled = jax.jit(jax.grad(loss, (0, 1, 2))).lower(x, x, x).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  assert temp < seq * seq * 4 / 8, temp


def test_blockwise_memory_under_a_layer_scan_is_subquadratic():
  """As the model runs it: a scan over layers (with remat) whose keys and
  validity do not depend on the carry. The loop-invariant part of the tile
  loop must not be hoisted out as per-tile stacked masks (a dense
  [tiles, B, H, bq, bk] array: Sq x Sk per head)."""
  seq, heads = 2048, 2
  groups = np.repeat(np.arange(4), seq // 4)
  valid = jnp.asarray(np.arange(seq)[None] < seq - 100)
  x = jax.ShapeDtypeStruct((1, seq, heads, 16), jnp.float32)

  def loss(q, k, v):
    mask = attention.GroupMask(groups, groups, valid, causal=False)

    @functools.partial(jax.checkpoint, prevent_cse=False)
    def layer(h, _):
      return h + attention.attend(h, k, v, mask, impl="blockwise",
                                  block_q=128, block_kv=128), None
    return jnp.sum(jax.lax.scan(layer, q, None, length=2)[0])

  compiled = jax.jit(jax.grad(loss, (0, 1, 2))).lower(x, x, x).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  assert temp < heads * seq * seq * 4 / 8, temp


@pytest.mark.parametrize("change, message", [
    (dict(impl="flash"), "Unknown attention impl 'flash'"),
    (dict(q_shape=(2, 10, 2)), "q must have rank 4"),
    (dict(k_shape=(3, 12, 2, 8), v_shape=(3, 12, 2, 8)), "disagree on batch"),
    (dict(k_shape=(2, 12, 4, 8), v_shape=(2, 12, 4, 8)), "disagree on heads"),
    (dict(v_shape=(2, 12, 2, 4)), "k and v must have the same shape"),
    (dict(q_group=np.zeros(9)), "q_group has 9 positions but the queries"),
    (dict(kv_group=np.zeros(11), kv_valid=np.ones((2, 11), bool)),
     "kv_group has 11 positions but the keys have Sk=12"),
    (dict(kv_valid=np.ones((3, 12), bool)), "kv_valid has batch 3"),
    (dict(block_q=0), "block_q must be a positive int"),
])
def test_bad_inputs_raise(change, message):
  args = dict(q_shape=(2, 10, 2, 8), k_shape=(2, 12, 2, 8),
              v_shape=(2, 12, 2, 8), q_group=np.zeros(10, int),
              kv_group=np.zeros(12, int), kv_valid=np.ones((2, 12), bool),
              impl="blockwise", block_q=16)
  args.update(change)
  mask = attention.GroupMask(args["q_group"].astype(int),
                             args["kv_group"].astype(int), args["kv_valid"],
                             causal=True)
  q, k, v = (jnp.zeros(args[n]) for n in ("q_shape", "k_shape", "v_shape"))
  with pytest.raises(ValueError, match=message):
    attention.attend(q, k, v, mask, impl=args["impl"],
                     block_q=args["block_q"])


@pytest.mark.parametrize("fields, message", [
    (dict(q_group=np.zeros((2, 5), int)), "q_group must be 1-D"),
    (dict(kv_group=np.zeros(5)), "kv_group must hold integers"),
    (dict(kv_valid=np.ones(5, bool)), "kv_valid must have rank 2"),
    (dict(kv_valid=np.ones((1, 5), np.int32)), "kv_valid must be boolean"),
    (dict(kv_valid=np.ones((1, 6), bool)), "kv_valid has 6 key positions"),
    (dict(causal="context_causal"), "causal must be a bool"),
])
def test_bad_masks_raise(fields, message):
  args = dict(q_group=np.zeros(5, int), kv_group=np.zeros(5, int),
              kv_valid=np.ones((1, 5), bool), causal=False)
  args.update(fields)
  with pytest.raises(ValueError, match=message):
    attention.GroupMask(**args)


def test_from_mode():
  valid = np.ones((1, 3), bool)
  assert attention.GroupMask.from_mode("context_causal", [0, 1, 2], [0, 1, 2],
                                       valid).causal
  with pytest.raises(ValueError, match="Unknown attention mask mode 'causal'"):
    attention.GroupMask.from_mode("causal", [0], [0], valid[:, :1])
