"""configs/hunyuan_video.py: HunyuanVideo's architecture as diffusers
defines it, lct_3b's scenes and stages; and the embedded-guidance default
that lets sample.py sample such a model."""
import inspect

import pytest

from lct_jax import configlib
from lct_jax.convert import hunyuan
from lct_jax.sampling.sampler import Sampler
from lct_jax.training.state import init_model

from tests.configs import tiny_run

CONFIG = "configs/hunyuan_video.py"


@pytest.mark.parametrize("stage", ["text_rope", "lct", "causal"])
def test_stages_validate_and_keep_lct_3b_scenes(stage):
  c = configlib.load(f"{CONFIG}:{stage}")
  configlib.validate(c)
  base = configlib.load(f"configs/lct_3b.py:{stage}")
  assert c.scene.to_dict() == base.scene.to_dict()
  assert c.train.steps == base.train.steps
  assert c.model.attention_mask == base.model.attention_mask
  assert c.model.text_rope and c.data.folder_kind == "latents"


def test_architecture_is_diffusers_default_hunyuan_video():
  diffusers = pytest.importorskip("diffusers")
  params = inspect.signature(
      diffusers.HunyuanVideoTransformer3DModel.__init__).parameters
  dconf = {k: p.default for k, p in params.items()
           if k != "self" and p.default is not inspect.Parameter.empty}
  want = hunyuan.config_from_diffusers(dconf, configlib.load(CONFIG))
  got = configlib.load(CONFIG)
  assert got.model.to_dict() == want.model.to_dict()
  m = got.model
  assert (m.width, m.depth, m.num_single_layers) == (3072, 20, 40)


def test_embedded_guidance_defaults_to_the_config():
  c = tiny_run.get_config()
  c.model.guidance_embeds = True
  c.sample.embedded_guidance = 4.5
  graphdef, params = init_model(c)
  s = Sampler(c, graphdef, params, steps=2)
  assert float(s.guidance_B[0]) == 4.5
  s = Sampler(c, graphdef, params, steps=2, guidance=2.0)
  assert float(s.guidance_B[0]) == 2.0
