"""AdamW with warmup then decay, global-norm clipping, decoupled weight decay.

Weight decay applies to matrices and embeddings only (not biases or norm
weights), the usual transformer practice.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import ml_collections
import optax

from lct_jax import configlib


def make_schedule(o, total_steps: int) -> optax.Schedule:
  """Linear warmup 0 -> lr, then cosine / linear decay to lr * end_lr_factor."""
  warmup = max(int(o.warmup_steps), 0)
  decay_steps = max(int(total_steps) - warmup, 1)
  end = o.lr * o.end_lr_factor
  if o.decay == "cosine":
    after = optax.cosine_decay_schedule(o.lr, decay_steps, alpha=o.end_lr_factor)
  elif o.decay == "linear":
    after = optax.linear_schedule(o.lr, end, decay_steps)
  elif o.decay == "constant":
    after = optax.constant_schedule(o.lr)
  else:
    raise ValueError(f"optim.decay={o.decay!r} is not one of "
                     f"{configlib.DECAYS}")
  if warmup == 0:
    return after
  return optax.join_schedules(
      [optax.linear_schedule(0.0, o.lr, warmup), after], [warmup])


def decay_mask_by_path(params):
  """Decay leaves named 'kernel' or 'embedding'; scanned stacks included."""
  def is_matrix(path, _):
    name = getattr(path[-1], "key", str(path[-1]))
    return name in ("kernel", "embedding")
  return jax.tree_util.tree_map_with_path(is_matrix, params)


def make_optimizer(o, schedule: optax.Schedule) -> optax.GradientTransformation:
  """The transformation for optim section `o` following `schedule`."""
  parts = []
  if o.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(o.clip_norm))
  parts.append(optax.adamw(schedule, b1=o.b1, b2=o.b2, eps=o.eps,
                           weight_decay=o.weight_decay,
                           mask=decay_mask_by_path))
  return optax.chain(*parts)


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """A run's optimizer: the transformation and the learning-rate schedule
  it follows (the training step logs it)."""
  tx: optax.GradientTransformation
  schedule: optax.Schedule


def optimizer_for(config) -> Optimizer:
  """The optimizer of a run config: built once per (optim section,
  train.steps), so the train state's and the step's are one object."""
  return _optimizer(ml_collections.FrozenConfigDict(config.optim),
                    int(config.train.steps))


@functools.lru_cache(maxsize=32)
def _optimizer(o, total_steps: int) -> Optimizer:
  schedule = make_schedule(o, total_steps)
  return Optimizer(make_optimizer(o, schedule), schedule)
