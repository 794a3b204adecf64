"""Demo: a tiny LCT model for the built-in synthetic scenes, on 2 CPU cores.

The synthetic scenes are small pixel-space videos (32x32 RGB), so the
"latent" is the pixels themselves (no VAE). The demo trains as the paper
does, a single-shot model first and LCT from it (README quick start):

  # 1. single-shot pre-training (one shot + its global prompt, 96 tokens)
  python train.py --config configs/demo.py:text_rope --workdir runs/demo_base
  # 1b. the same single-shot model, trained at low noise for a few minutes
  python train.py --config configs/demo.py:sharpen --workdir runs/demo_sharp \
      --config.train.init_from=runs/demo_base
  # 2. LCT: 4-shot scenes, per-shot timesteps, started from stage 1b
  python train.py --config configs/demo.py --workdir runs/demo \
      --config.train.init_from=runs/demo_sharp
  # 3. optional: the context-causal fine-tune, for causal sampling
  python train.py --config configs/demo.py:causal --workdir runs/demo_causal \
      --config.train.init_from=runs/demo

Why these settings (BENCHMARKS.md, "Session of 2026-12-03" and later,
measured on 2 cores with `python -m lct_jax.evaluate`):
  * two stages: in a 4-shot scene the 16 global-prompt tokens are 16 of 336
    keys, so a model trained on scenes from scratch learns the prompt's
    colours slowly; a single-shot run (96 tokens, 3x the steps per second)
    learns them within minutes, and LCT then only has to learn the scene;
  * patch 4 x patch_t 2 over 2-frame shots: 64 tokens of 96 values per shot,
    2x the steps per second of patch 8 over 4 frames at the same tokens;
  * model.prediction = data (x-prediction, velocity loss): velocity
    prediction must carry the input noise through the width-128 bottleneck
    and stayed at noise;
  * flow.t_mean = 1.0: timesteps skewed to high noise, where the prompt
    decides the picture (t_mean 0 samples noise);
  * sampling with guidance 1.5 (guidance 3 halves the prompt adherence of
    this model, 5 destroys it) and 30 steps (60 change nothing);
  * a low-noise stage (`sharpen`, median t 0.27), a 20% low-noise share in
    the scene stages, and the stochastic sampler (eta 1): the high-noise
    training above almost never sees t < 0.1, so the model damaged nearly
    clean images (small sprites most); taught to keep them, and given
    re-drawn noise to repair with, it recognises 0.16-0.22 of held-out
    shots (two seeds) where the recipe without them recognised 0.096 (64
    four-shot scenes; BENCHMARKS.md, "Session of 2026-12-06").

Sizes: 64 video tokens per shot, 4 shots + 5 text groups of 16 tokens
= 336 tokens per scene; width 128, 4 dual blocks, ~2.6M parameters.
`configs/demo_long.py` is the same model trained longer.
"""
from lct_jax import configlib
from lct_jax.stages import apply_stage


# Steps per stage on 2 idle cores: text_rope at ~13 steps/s (96 tokens),
# lct and causal at ~3.7 (336 tokens); together ~13 minutes of training.
# Most of it goes to the single-shot stage: per minute it teaches the
# picture fastest, and the scene stage then needs only a few minutes
# (BENCHMARKS.md, "Session of 2026-12-04 (fourth)": 7000 + 800 steps put the
# background right in about twice as many shots as 4000 + 1400).
STEPS = {"text_rope": 7000, "sharpen": 1500, "lct": 800, "causal": 800}
CHECKPOINT_EVERY = {"text_rope": 1000, "sharpen": 500, "lct": 200,
                    "causal": 200}  # ~90 s


def get_config(stage: str = "lct"):
  c = configlib.base_config()
  c.seed = 0

  m = c.model
  m.width, m.num_heads, m.head_dim = 128, 4, 32
  m.depth = 4
  m.in_channels = 3                 # RGB pixels
  m.patch_t, m.patch = 2, 4
  m.rope_axes_dim = (8, 12, 12)     # sums to head_dim
  m.text_mode = "tokens"            # the synthetic captions' word vocabulary
  m.vocab_size = 512
  m.text_embed_dim = 64
  m.attention_impl = "auto"         # blockwise on CPU
  # One tile (blocks are clamped to the sequence): at these lengths fewer,
  # larger tiles win on CPU (BENCHMARKS.md: 1.85 s/step vs 2.78 at 256).
  m.block_q = m.block_kv = 2048
  m.remat_policy = "none"           # small enough to keep activations
  m.prediction = "data"             # x-prediction (see above)

  s = c.scene
  s.max_text_len = 16
  s.frames, s.height, s.width = 2, 32, 32   # one temporal patch per shot

  f = c.flow
  f.t_mean = 1.0                    # logit-normal skewed to high noise
  f.t_low_fraction = 0.2            # ... but a fifth of the shots at low
  f.t_low_mean = -1.0               # noise: keeps what `sharpen` taught
  f.p_frame = 0.1                   # some shots become single images
  f.p_text = 0.1                    # CFG dropout
  f.p_single = 0.1                  # mix in single-shot examples (they
                                    # carry no global prompt)

  o = c.optim
  o.lr = 2e-3                       # tiny model, short run (4e-3: worse)
  o.b2 = 0.95                       # Adam's second moment over ~20 steps,
                                    # not ~1000: 3x the recognised shots of
                                    # 0.999 after the 7000 single-shot steps
                                    # (BENCHMARKS.md, 2026-12-04 (fourth))
  o.warmup_steps = 50
  o.decay = "cosine"
  o.weight_decay = 0.01
  o.ema_decay = 0.995               # short run: a short EMA horizon

  t = c.train
  t.batch_size = 8
  t.log_every = 25

  sa = c.sample
  sa.steps = 30
  sa.cfg_scale = 1.5                # guidance (see above)
  sa.eta = 1.0                      # stochastic sampler (see above)

  d = c.data
  d.source = "synthetic"            # scenes drawn on the fly, no download
  d.num_scenes = 100_000            # > steps * batch_size: no scene repeats
  d.synthetic_max_shots = 6         # more shots than slots: contiguous windows
  d.synthetic_max_frames = 4        # longer shots than slots: frame windows
  d.workers = 0                     # in-process: 2 cores, the step needs them
  d.skip_bad_records = False

  # `sharpen`: the single-shot stage again, at low noise (a logit-normal
  # at mean -1: median t 0.27) and a quarter of the learning rate.
  apply_stage(c, "text_rope" if stage == "sharpen" else stage, max_shots=4)
  if stage in ("text_rope", "sharpen"):
    f.t_low_fraction = 0.0          # measured: a low share from the first
                                    # step costs the high-noise learning
  if stage == "sharpen":
    f.t_mean = -1.0
    o.lr = 5e-4
  # A preempted demo loses under 2 minutes.
  t.steps, t.checkpoint_every = STEPS[stage], CHECKPOINT_EVERY[stage]
  return c
