"""The MMDiT's graphdef holds the model and the scene geometry only: run
settings (train, optim, data, sample) do not change it, so a sampler built
after such a change reuses the compiled function; a model change does not."""
import numpy as np
from flax import nnx

from _util import three_shot_scene, tiny_config
from lct_jax.model import MMDiT, ModelConfig
from lct_jax.sampling import Sampler
from lct_jax.sampling import joint as joint_lib


def split(c):
  graphdef, params = nnx.split(MMDiT(c, rngs=nnx.Rngs(0)), nnx.Param)
  return graphdef, nnx.to_pure_dict(params)


def test_run_settings_do_not_recompile_the_sampler():
  c = tiny_config()
  graphdef, params = split(c)
  scene = three_shot_scene(c)
  first = Sampler(c, graphdef, params, steps=2).joint(scene)
  # (Other tests may have compiled this graphdef's sampler already.)
  compiled = joint_lib.jitted(graphdef)._cache_size()  # pylint: disable=protected-access
  assert compiled >= 1

  run = c.copy_and_resolve_references()
  run.train.steps, run.train.batch_size = 77, 5
  run.optim.lr, run.optim.ema_decay = 1e-5, 0.5
  run.data.num_scenes, run.data.source = 3, "tfds_synthetic"
  run.sample.cfg_scale = 4.0
  graphdef_run, _ = split(run)
  assert graphdef_run == graphdef and hash(graphdef_run) == hash(graphdef)
  again = Sampler(run, graphdef_run, params, steps=2).joint(scene)
  assert joint_lib.jitted(graphdef_run) is joint_lib.jitted(graphdef)
  assert joint_lib.jitted(graphdef)._cache_size() == compiled  # pylint: disable=protected-access
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)

  other = c.copy_and_resolve_references()
  other.model.rope_theta = 100.0                 # a model change
  assert split(other)[0] != graphdef


def test_model_config_is_the_model_section_and_geometry():
  c = tiny_config()
  mc = ModelConfig.from_config(c)
  assert dict(mc.model) == dict(c.model.to_dict())
  assert (mc.geom.max_shots, mc.geom.frames) == (c.scene.max_shots,
                                                 c.scene.frames)
  # Built from either; the same graphdef.
  assert (nnx.split(MMDiT(mc, rngs=nnx.Rngs(0)))[0]
          == nnx.split(MMDiT(c, rngs=nnx.Rngs(0)))[0])
