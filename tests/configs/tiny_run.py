"""A tiny run for the training-loop tests: compiles and steps in seconds.

16x16 synthetic scenes, 2 shots of 2 frames, a 1-block width-32 model.
`get_config("causal")` is its causal fine-tune stage.
"""
from lct_jax import configlib
from lct_jax.stages import apply_stage


def get_config(stage: str = "lct"):
  c = configlib.base_config()
  m = c.model
  m.width, m.num_heads, m.head_dim = 32, 2, 16
  m.depth = 1
  m.in_channels = 3
  m.patch_t, m.patch = 1, 4
  m.rope_axes_dim = (4, 6, 6)
  m.vocab_size = 64
  m.text_embed_dim = 16
  m.zero_init = False
  m.remat_policy = "none"
  s = c.scene
  s.max_text_len = 16
  s.frames, s.height, s.width = 2, 16, 16
  c.optim.lr, c.optim.warmup_steps = 1e-3, 2
  c.flow.p_frame = c.flow.p_text = c.flow.p_single = 0.2
  t = c.train
  t.batch_size, t.steps = 2, 8
  t.log_every, t.checkpoint_every, t.keep_checkpoints = 2, 2, 3
  d = c.data
  d.num_scenes, d.read_threads, d.prefetch = 64, 1, 2
  apply_stage(c, stage, max_shots=2)
  return c
