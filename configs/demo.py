"""Demo: a tiny LCT model for the built-in synthetic scenes, on 2 CPU cores.

The synthetic scenes (data issue) are small pixel-space videos: 32x32 RGB,
up to 4 frames per shot, up to 4 shots, so the "latent" is the pixels
themselves (no VAE) and an 8x8 patch gives 4x4 tokens per frame.

Why these settings (BENCHMARKS.md, "Demo generation", measured on 2 cores):
  * patch 8, not 4: a quarter of the tokens (336 instead of 1104 per
    scene, ~0.57 s/step at batch 8), and every texture period divides the
    patch, so a token's content does not depend on its absolute position
    (the residual stream has none; RoPE acts in attention only);
  * model.prediction = data (x-prediction, velocity loss): with a 192-value
    patch into width 128, velocity prediction must carry the input noise
    through the bottleneck and stayed at noise; data prediction need not;
  * flow.t_mean = 1.0: timesteps skewed to high noise, where the prompt
    decides the picture;
  * sampling with guidance 3 and 30 Euler steps.

  python train.py --config configs/demo.py               # LCT (bidirectional)
  python train.py --config configs/demo.py:causal        # causal fine-tune
  python train.py --config configs/demo.py --config.optim.lr=3e-4

Sizes: 64 video tokens per shot, 4 shots + 5 text groups of 16 tokens
= 336 tokens per scene; width 128, 4 dual blocks, ~2.6M parameters.
`configs/demo_long.py` is the same model trained 4x longer (~60 minutes).
"""
from lct_jax import configlib
from lct_jax.stages import apply_stage


def get_config(stage: str = "lct"):
  c = configlib.base_config()
  c.seed = 0

  m = c.model
  m.width, m.num_heads, m.head_dim = 128, 4, 32
  m.depth = 4
  m.in_channels = 3                 # RGB pixels
  m.patch_t, m.patch = 1, 8
  m.rope_axes_dim = (8, 12, 12)     # sums to head_dim
  m.text_mode = "tokens"            # the synthetic captions' word vocabulary
  m.vocab_size = 512
  m.text_embed_dim = 64
  m.attention_impl = "auto"         # blockwise on CPU
  # One tile (blocks are clamped to the sequence): at 1.1K tokens fewer,
  # larger tiles win on CPU (BENCHMARKS.md: 1.85 s/step vs 2.78 at 256).
  m.block_q = m.block_kv = 2048
  m.remat_policy = "none"           # small enough to keep activations
  m.prediction = "data"             # x-prediction (see above)

  s = c.scene
  s.max_text_len = 16
  s.frames, s.height, s.width = 4, 32, 32

  f = c.flow
  f.t_mean = 1.0                    # logit-normal skewed to high noise
  f.p_frame = 0.1                   # some shots become single images
  f.p_text = 0.1                    # CFG dropout
  f.p_single = 0.1                  # mix in single-shot examples (they
                                    # carry no global prompt)

  o = c.optim
  o.lr = 2e-3                       # tiny model, short run
  o.warmup_steps = 50
  o.decay = "cosine"
  o.weight_decay = 0.01
  o.ema_decay = 0.995               # short run: a short EMA horizon

  t = c.train
  t.batch_size = 8                  # ~0.57 s/step on 2 CPU cores
  t.steps = 1400                    # ~14 min on 2 idle cores
  t.log_every = 25
  t.checkpoint_every = 200          # a preempted demo loses < 2 minutes

  sa = c.sample
  sa.steps = 30
  sa.cfg_scale = 3.0                # guidance: the prompt's colours stick

  d = c.data
  d.source = "synthetic"            # scenes drawn on the fly, no download
  d.num_scenes = 10_000             # > steps * batch_size: no scene repeats
  d.synthetic_max_shots = 6         # more shots than slots: contiguous windows
  d.synthetic_max_frames = 6        # longer shots than slots: frame windows
  d.workers = 0                     # in-process: 2 cores, the step needs them
  d.skip_bad_records = False

  apply_stage(c, stage, max_shots=4)
  return c
