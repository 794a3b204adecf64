"""The samplers under meshes equal one device (8 fake CPU devices).

Reference: the same `Sampler` with no mesh (one device, the path the KV
cache contract test checks against full recomputation). Under each mesh the
parameters are sharded (fsdp / tensor), the scene's tokens and the cache's
video tokens over 'context' with the named strategy; the query and key
sequences of a cached shot differ in length, so ring and ulysses run with
unequal chunks there. Float32; relative error <= 1e-5.
"""
import jax
import numpy as np
import pytest
from flax import nnx

from _util import three_shot_scene, tiny_config
from lct_jax.model import MMDiT
from lct_jax.parallel import make_mesh
from lct_jax.sampling import Sampler

AXES = ("data", "fsdp", "context", "tensor")


def rel_err(a, b):
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-6))


def _model(mask, strategy):
  c = tiny_config()               # 3 shot slots of up to 3 frames, 2 heads
  c.model.attention_mask = mask
  c.model.context_strategy = strategy
  graphdef, params = nnx.split(MMDiT(c, rngs=nnx.Rngs(5)), nnx.Param)
  return c, graphdef, nnx.to_pure_dict(params)


def _scene(c):
  scene = three_shot_scene(c)
  scene.shots[2].history = (0,)      # a pool that skips a shot
  return scene


def _sample(c, graphdef, params, mode, mesh):
  sampler = Sampler(c, graphdef, params, steps=2, shift=2.0, cfg_scale=2.5,
                    t_c=0.3, mesh=mesh)
  return getattr(sampler, mode)(_scene(c))


@pytest.mark.parametrize("mode,mask,strategy,mesh_shape", [
    ("causal", "context_causal", "ring", (1, 2, 2, 2)),
    ("causal", "context_causal", "ulysses", (2, 2, 2, 1)),
    ("causal", "context_causal", "all_gather", (1, 1, 8, 1)),
    ("joint", "bidirectional", "ring", (2, 1, 4, 1)),
    ("bidirectional_ar", "context_causal", "all_gather", (1, 2, 4, 1)),
])
def test_sampler_under_mesh_equals_one_device(mode, mask, strategy,
                                              mesh_shape):
  c, graphdef, params = _model(mask, strategy)
  ref = _sample(c, graphdef, params, mode, None)
  got = _sample(c, graphdef, params, mode,
                make_mesh(dict(zip(AXES, mesh_shape))))
  errs = [rel_err(a, b) for a, b in zip(got, ref)]
  assert max(errs) <= 1e-5, errs


def test_cache_is_sharded_over_context_and_tensor():
  """The cache's video K/V live split over 'context' (tokens) and 'tensor'
  (heads): its memory per device falls with the mesh, not replicated."""
  c, graphdef, params = _model("context_causal", "ring")
  mesh = make_mesh(dict(data=1, fsdp=2, context=2, tensor=2))
  sampler = Sampler(c, graphdef, params, steps=1, mesh=mesh)
  cache = sampler.new_cache(_scene(c))
  spec = cache.kv.vid_k.sharding.spec
  assert spec[3] == "context" and spec[4] == "tensor", spec
  shard = cache.kv.vid_k.addressable_shards[0].data
  assert shard.size * 4 == cache.kv.vid_k.size


def test_mesh_that_cannot_run_the_strategy_fails_before_tracing():
  c, graphdef, params = _model("context_causal", "ulysses")
  with pytest.raises(ValueError, match="ulysses.*divisible by the context"):
    Sampler(c, graphdef, params,
            mesh=make_mesh(dict(data=1, fsdp=1, context=8, tensor=1)))


def test_cached_generation_is_not_replicated_work():
  """Under a context mesh the cached shot's attention runs as a context
  strategy (a collective in the compiled step), not as one device's
  computation repeated everywhere."""
  c, graphdef, params = _model("context_causal", "ring")
  mesh = make_mesh(dict(data=1, fsdp=1, context=8, tensor=1))
  sampler = Sampler(c, graphdef, params, steps=1, mesh=mesh)
  cache = sampler.new_cache(_scene(c))
  from lct_jax.sampling import causal  # pylint: disable=g-import-not-at-top
  _, denoise_fn, _ = causal.jitted(graphdef)
  shot = _scene(c).shots[0]
  text, text_len, pooled = sampler._shot_args(shot)  # pylint: disable=protected-access
  with jax.set_mesh(mesh):
    hlo = denoise_fn.lower(
        sampler.params, cache, sampler.pool_mask([]), text, text_len, pooled,
        np.asarray([3], np.int32), np.zeros((1,) + sampler.shot_shape,
                                            np.float32),
        sampler.ts, 1.0, use_cfg=False).compile().as_text()
  assert "collective-permute" in hlo       # the ring over 'context'
