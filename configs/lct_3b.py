"""LCT at paper scale: a ~3B-parameter MMDiT over 9-shot scenes.

Model: width 2048, 16 heads of 128, 20 dual-stream blocks (the paper's base
model is a 3B MMDiT; its exact shape is not public, this one is ours).
Scene: 480x480 area, 8 s at 12 fps per shot through a 16x-spatial /
4x-temporal latent space (VAE 8x8 spatial, 4x temporal, C=16; patch 1x2x2):
  latent grid 25 x 60 x 60 -> 25 x 30 x 30 = 22,500 tokens per shot,
  9 shots -> 202,500 video tokens, + 10 groups x 256 text tokens.
This needs context parallelism (issue: sharded attention) and remat.

Stages (docs/design.md section 10; `:stage` selects):
  python train.py --config configs/lct_3b.py:text_rope  # 1-shot, text RoPE
  python train.py --config configs/lct_3b.py:lct        # 9-shot, bidirectional
  python train.py --config configs/lct_3b.py:causal     # context-causal
"""
from lct_jax import configlib
from lct_jax.stages import apply_stage


def get_config(stage: str = "lct"):
  c = configlib.base_config()

  m = c.model
  m.width, m.num_heads, m.head_dim = 2048, 16, 128
  m.depth = 20
  m.mlp_ratio = 4.0
  m.in_channels = 16
  m.patch_t, m.patch = 1, 2
  m.rope_axes_dim = (16, 56, 56)    # HunyuanVideo's split at head_dim 128
  m.rope_theta = 256.0
  m.text_mode = "embeddings"        # precomputed by a frozen text encoder
  m.text_embed_dim = 4096           # LLM / T5-XXL class encoder
  m.use_pooled_text = True
  m.pooled_dim = 768                # CLIP-L pooled
  m.compute_dtype = "bfloat16"
  m.remat_policy = "full"
  m.block_q = m.block_kv = 512

  s = c.scene
  s.max_text_len = 256
  s.frames, s.height, s.width = 25, 60, 60

  f = c.flow
  f.p_frame = 0.1
  f.p_text = 0.1
  f.p_single = 0.2
  f.shift = 3.0                     # high-resolution video: more noise mass

  o = c.optim
  o.lr = 1e-5
  o.warmup_steps = 1000
  o.decay = "constant"
  o.weight_decay = 0.0
  o.ema_decay = 0.9999

  t = c.train
  t.batch_size = 128                # one scene per GPU on 128 H800 (paper)
  t.grad_accum = 16                 # microbatches of 8 scenes: one scene per
                                    # context group of 8 chips at a time
  t.steps = 135_000                 # paper: LCT stage

  # Plan for a v5p-128 pod (64 chips): 8 context groups of 8 chips, each
  # holding one scene's 205K tokens (25.6K per chip) at a time; parameters
  # and AdamW sharded over fsdp. Ulysses turns sequence shards into head
  # shards (16 heads / 8 = 2 per chip), so on TPU each chip runs splash on
  # the whole sequence. Compiled by the TPU compiler (`train.py
  # --compile_for=v5p-128`): 21.3 GiB of 95.74 per chip (ring: 28.3), 78%
  # headroom; without the microbatches (16 scenes per group at once) it
  # needs 144 GiB. Plans for other slices: BENCHMARKS.md, "TPU memory";
  # keep batch_size / grad_accum a multiple of data x fsdp.
  me = c.mesh
  me.data, me.fsdp, me.context, me.tensor = 1, -1, 8, 1
  m.context_strategy = "ulysses"

  apply_stage(c, stage, max_shots=9)
  if stage == "text_rope":
    t.steps = 5_000                 # "efficient single-shot fine-tuning"
  elif stage == "causal":
    t.steps = 9_000                 # paper: 9K (1K already good)
  return c
