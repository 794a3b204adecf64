r"""Trains an LCT model.

  python train.py --config configs/demo.py --workdir runs/demo
  python train.py --config configs/demo.py:causal --config.optim.lr=1e-4

PARTIAL (until the training-loop issue lands): this trains on the scenes of
`data.source` (by default the built-in synthetic scenes, drawn on the fly)
through the grain pipeline and the real jitted step, and logs the loss; it
saves nothing yet. Checkpoints, exact resume, preemption and TensorBoard
come with the loop issue.
"""
import time

from absl import app, flags, logging
from ml_collections import config_flags

import jax

from lct_jax import configlib
from lct_jax.data import pipeline
from lct_jax.layout import SceneGeometry
from lct_jax.training import (abstract_model, count_params, create_train_state,
                              init_model, make_train_step)

_CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py",
                                          "Config file (`path[:stage]`).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Work directory.")
_LOG_EVERY = flags.DEFINE_integer("log_every", 25, "Steps between log lines.")
_DRY_RUN = flags.DEFINE_bool(
    "dry_run", False, "Print parameter and token counts (abstract init: no "
    "memory allocated) and exit; works for configs/lct_3b.py on a laptop.")


def describe(config) -> None:
  """Parameter count and scene token budget, without allocating anything."""
  geom = SceneGeometry.from_config(config)
  _, params = abstract_model(config)
  print(f"config stage={config.train.stage} "
        f"mask={config.model.attention_mask}")
  print(f"parameters: {count_params(params):,} "
        f"({count_params(params) / 1e9:.3f}B)")
  print(f"tokens per scene: {geom.seq_len:,} = {geom.num_video_slots} video "
        f"slots x {geom.tokens_per_slot:,} (grid {geom.grid}) + "
        f"{geom.num_groups} text groups x {geom.max_text_len}")


def main(argv):
  del argv
  config = _CONFIG.value
  configlib.validate(config)
  if _DRY_RUN.value:
    describe(config)
    return

  # --- model and state ---------------------------------------------------
  graphdef, params = init_model(config)
  print(f"stage {config.train.stage}: {count_params(params) / 1e6:.2f}M "
        f"parameters, mask {config.model.attention_mask}, "
        f"{jax.device_count()} device(s)")
  state = create_train_state(config, params)
  step_fn = make_train_step(graphdef, config)

  # --- data: grain pipeline over data.source (synthetic by default) ---------
  batches = pipeline.make_pipeline(config)
  rng = jax.random.key(config.seed)

  # --- loop ---------------------------------------------------------------
  t0 = time.time()
  for step in range(config.train.steps):
    batch = next(batches)
    state, metrics = step_fn(state, batch, jax.random.fold_in(rng, step))
    if step % _LOG_EVERY.value == 0 or step == config.train.steps - 1:
      m = {k: float(v) for k, v in metrics.items()}
      rate = (step + 1) / (time.time() - t0)
      print(f"step {step:5d}  loss {m['loss']:.4f}  grad_norm "
            f"{m['grad_norm']:.3f}  lr {m['lr']:.2e}  {rate:.2f} steps/s",
            flush=True)
  batches.close()
  logging.info("done; workdir %s is unused until the loop issue lands",
               _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
