"""Meshes and logical sharding on 8 fake CPU devices."""
import jax
import numpy as np
import pytest
from flax import nnx

from _util import tiny_config
from lct_jax import batch as batch_lib
from lct_jax.parallel import make_mesh, mesh_shape, parse_mesh
from lct_jax.model.sharding import logical_param_names, param_shardings
from lct_jax.training import init_model


def test_mesh_shape_resolution_and_errors():
  cfg = dict(data=-1, fsdp=2, context=1, tensor=2)
  assert mesh_shape(cfg, 8) == (2, 2, 1, 2)
  with pytest.raises(ValueError, match="does not divide the 6 devices"):
    mesh_shape(dict(data=-1, fsdp=4, context=1, tensor=1), 6)
  with pytest.raises(ValueError, match="has 4 devices but 8 are available"):
    mesh_shape(dict(data=2, fsdp=2, context=1, tensor=1), 8)
  with pytest.raises(ValueError, match="at most one axis may be -1"):
    mesh_shape(dict(data=-1, fsdp=-1, context=1, tensor=1), 8)
  mesh = make_mesh(cfg)
  assert mesh.axis_names == ("data", "fsdp", "context", "tensor")
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


def test_parse_mesh_command_line_form():
  assert parse_mesh("") == dict(data=1, fsdp=1, context=1, tensor=1)
  assert parse_mesh(" context=4, tensor=2 ") == dict(data=1, fsdp=1,
                                                     context=4, tensor=2)
  assert parse_mesh("data=-1") == dict(data=-1, fsdp=1, context=1, tensor=1)
  with pytest.raises(ValueError, match="'seq=2' is not AXIS=SIZE"):
    parse_mesh("seq=2")
  with pytest.raises(ValueError, match="'context4' is not AXIS=SIZE"):
    parse_mesh("context4")
  with pytest.raises(ValueError, match="size 'two' of 'tensor'"):
    parse_mesh("tensor=two")


def test_every_param_has_logical_names_of_its_rank():
  c = tiny_config()
  _, params = init_model(c)
  names = logical_param_names(c)
  flat_p = jax.tree_util.tree_flatten_with_path(params)[0]
  flat_n = dict(jax.tree_util.tree_flatten_with_path(
      names, is_leaf=lambda n: isinstance(n, tuple))[0])
  for path, x in flat_p:
    assert len(flat_n[path]) == x.ndim, (path, flat_n[path], x.shape)
  # Scanned blocks carry the 'layers' axis first; matrices name 'embed'.
  k = names["transformer_blocks"]["attn"]["to_q"]["kernel"]
  assert k == ("layers", "embed", "heads")


@pytest.mark.parametrize("batch", [4, 8])
def test_sharded_forward_equals_single_device(batch):
  """Batch 4 on (2, 2, 1, 2) is one example per batch shard: the case that
  the ('data', 'fsdp') batch rule miscompiled (see parallel/logical.py)."""
  c = tiny_config()
  graphdef, params = init_model(c)
  b = batch_lib.random_batch(c, 0, batch)
  t = np.random.default_rng(0).random((batch, 3)).astype(np.float32)
  fwd = lambda p, b, t: nnx.merge(graphdef, p)(
      b["latents"], t, b["text"], b["text_len"], b["num_frames"])
  ref = np.asarray(jax.jit(fwd)(params, b, t))
  mesh = make_mesh(dict(data=2, fsdp=2, context=1, tensor=2))
  with jax.set_mesh(mesh):
    shardings = param_shardings(c, params, mesh)
    p_sh = jax.device_put(params, shardings)
    spec = shardings["transformer_blocks"]["attn"]["to_q"]["kernel"].spec
    assert spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    out = np.asarray(jax.jit(fwd)(p_sh, b, t))
  assert np.max(np.abs(out - ref)) <= 1e-5 * np.max(np.abs(ref))


def test_sharded_gradients_equal_single_device():
  """The training computation (augmentations, loss, backward) under a
  data x fsdp x tensor mesh gives the single-device gradients."""
  from lct_jax.training import compute_grads  # pylint: disable=g-import-not-at-top
  c = tiny_config()
  c.flow.p_frame = c.flow.p_text = 0.3
  graphdef, params = init_model(c)
  b = batch_lib.random_batch(c, 4, 4)
  keys = jax.random.split(jax.random.key(0), 4)
  grads_fn = lambda p, b, k: compute_grads(p, b, k, graphdef=graphdef,
                                           config=c)
  ls_ref, _, g_ref = jax.jit(grads_fn)(params, b, keys)
  mesh = make_mesh(dict(data=2, fsdp=2, context=1, tensor=2))
  with jax.set_mesh(mesh):
    p_sh = jax.device_put(params, param_shardings(c, params, mesh))
    ls, _, g = jax.jit(grads_fn)(p_sh, b, keys)
  assert abs(float(ls) - float(ls_ref)) <= 1e-5 * abs(float(ls_ref))
  for a, r in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
    a, r = np.asarray(a), np.asarray(r)
    assert np.max(np.abs(a - r)) <= 1e-4 * max(np.max(np.abs(r)), 1e-12)
