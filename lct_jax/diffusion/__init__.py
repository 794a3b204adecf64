"""Rectified flow objective and scene augmentations (docs/design.md section 8)."""
from lct_jax.diffusion import augment
from lct_jax.diffusion.flow import (add_noise, frame_mask, per_shot_mse,
                                    resolution_shift, sample_timesteps,
                                    shift_timesteps, shot_loss_sum,
                                    velocity_target)
