"""Shared tiny configs for the tests (CPU, compile in seconds)."""
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
