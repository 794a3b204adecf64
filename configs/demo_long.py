"""The demo model (`configs/demo.py`) trained about 60 minutes on 2 CPU
cores instead of 15: the same model, data and recipe, 4x the steps and a
longer EMA horizon. See BENCHMARKS.md, "Demo generation", for what each
length reaches.

  python train.py --config configs/demo_long.py --workdir runs/demo_long
  python -m lct_jax.evaluate --workdir runs/demo_long --scenes 32
"""
from configs import demo


def get_config(stage: str = "lct"):
  c = demo.get_config(stage)
  c.train.steps = 5600              # ~55 min at ~0.57 s/step
  c.train.checkpoint_every = 400
  c.train.keep_checkpoints = 0      # keep all: the learning curve reads them
  c.optim.ema_decay = 0.999
  return c
