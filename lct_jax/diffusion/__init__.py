"""Rectified flow objective and scene augmentations (DESIGN.md section 4)."""
from lct_jax.diffusion import augment
from lct_jax.diffusion.flow import (add_noise, frame_mask, per_shot_mse,
                                    resolution_shift, sample_timesteps,
                                    shift_timesteps, shot_loss_sum,
                                    velocity_target)
