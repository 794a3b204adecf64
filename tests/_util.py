"""Shared tiny configs for the tests (CPU, compile in seconds), and the
import of the optional PyTorch baseline."""
import importlib
import os

import numpy as np
import pytest

from lct_jax import configlib


def tiny_config(**scene):
  """A random-init (not zero-init) tiny model: every path carries signal."""
  c = configlib.base_config()
  m = c.model
  m.width, m.num_heads, m.head_dim = 32, 2, 16
  m.depth = 2
  m.in_channels = 2
  m.patch_t, m.patch = 1, 2
  m.rope_axes_dim = (4, 6, 6)
  m.vocab_size = 32
  m.text_embed_dim = 16
  m.zero_init = False
  m.block_q = m.block_kv = 16       # many tiles even at tiny sizes
  m.remat_policy = "none"
  s = c.scene
  s.max_shots, s.max_text_len = 3, 4
  s.frames, s.height, s.width = 3, 4, 4
  for k, v in scene.items():
    s[k] = v
  c.flow.p_frame = c.flow.p_text = c.flow.p_single = 0.0
  c.optim.warmup_steps = 0
  c.train.batch_size = 2
  return c


def three_shot_scene(c, seed: int = 0):
  """A tiny_config scene: global prompt + 3 shots of 3, 1 (an image) and 2
  frames with random prompts of 4, 2 and 3 tokens (seeds 10..12)."""
  from lct_jax.sampling import Scene, Shot  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  L = c.scene.max_text_len

  def text(n):
    t = np.zeros(L, np.int32)
    t[:n] = rng.integers(3, c.model.vocab_size, n)
    return t

  shots = [Shot(text(4), 4, num_frames=3, seed=10),
           Shot(text(2), 2, num_frames=1, seed=11),
           Shot(text(3), 3, num_frames=2, seed=12)]
  return Scene(text(3), 3, shots)


def write_workdir(wd, config):
  """A train.py work directory without training: the config's initial
  train state saved by the training loop's Checkpointer, and config.json.
  Returns the state."""
  import jax  # pylint: disable=g-import-not-at-top
  from lct_jax.parallel import make_mesh  # pylint: disable=g-import-not-at-top
  from lct_jax.training import placement  # pylint: disable=g-import-not-at-top
  from lct_jax.training.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top
  mesh = make_mesh(dict(data=1, fsdp=1, context=1, tensor=1),
                   jax.devices()[:1])
  state = placement.init_state(config, mesh)
  ckpt = Checkpointer(str(wd), async_save=False)
  ckpt.save(state, {}, jax.random.key(0), config)
  ckpt.wait()
  ckpt.close()
  (wd / "config.json").write_text(config.to_json_best_effort(indent=1))
  return state


def parity_modules(*names):
  """The `parity` extra's modules (torch, diffusers, transformers): skipped
  where the extra is not installed, except in CI (.ci/run sets
  LCT_REQUIRE_PARITY), where a missing one is a failure, not a silent
  skip."""
  if os.environ.get("LCT_REQUIRE_PARITY"):
    return [importlib.import_module(n) for n in names]
  why = ("parity extra not installed: pip install torch==2.13.0, then pip "
         "install -e '.[parity]'")
  return [pytest.importorskip(n, reason=why) for n in names]
