"""The optimizer: warmup then decay, global-norm clipping, decoupled weight
decay, and one of two update rules (`optim.name`):

  adamw  AdamW on every parameter.
  muon   Muon (momentum orthogonalised by Newton-Schulz) on the transformer
         blocks' weight matrices, AdamW on everything else: embeddings, the
         output projection, biases and norm weights, which are not maps
         between hidden states (exactly the `adamw` rule). Muon's update is
         rescaled to the RMS of a typical AdamW update (`consistent_rms`,
         Moonlight's rule), so the two parts share one learning rate and
         one schedule. Each part's moments are shaped like the parameters
         with the other part's leaves masked; they are sharded like the
         parameters all the same (`model/sharding.state_shardings`).

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


def _key_names(path) -> list[str]:
  """The dict keys of a params-tree path, as strings."""
  return [getattr(k, "key", str(k)) for k in path]


def decay_mask_by_path(params):
  """Decay leaves named 'kernel' or 'embedding'; scanned stacks included."""
  def is_matrix(path, _):
    return _key_names(path)[-1] in ("kernel", "embedding")
  return jax.tree_util.tree_map_with_path(is_matrix, params)


# Muon's update RMS is set to this fraction of sqrt(max(fan_in, fan_out)):
# 0.2 matches AdamW's typical update RMS (Liu et al. 2025, "Muon is
# scalable for LLM training"), so AdamW's learning rate carries over.
MUON_CONSISTENT_RMS = 0.2


def _is_block_matrix(path, x) -> bool:
  names = _key_names(path)
  return (any(n.endswith("transformer_blocks") for n in names)
          and names[-1] == "kernel" and x.ndim >= 2)


def muon_dimension_numbers(params):
  """Per leaf: Muon's matrix axes for a transformer block's kernel, None
  for anything else. A block stack scanned over layers is [layers, fan_in,
  fan_out]: the leading axes are batch axes, so each layer's matrix is
  orthogonalised on its own."""
  def rule(path, x):
    if _is_block_matrix(path, x):
      return optax.contrib.MuonDimensionNumbers(reduction_axis=x.ndim - 2,
                                                output_axis=x.ndim - 1)
    return None
  return jax.tree_util.tree_map_with_path(rule, params)


def _adamw(o, schedule):
  return optax.adamw(schedule, b1=o.b1, b2=o.b2, eps=o.eps,
                     weight_decay=o.weight_decay, mask=decay_mask_by_path)


def _muon_and_adamw(o, schedule):
  # optax's `muon` sends the leaves it does not orthogonalise to a Nesterov
  # AdamW that decays every one of them, biases and norms included; the
  # partition keeps those leaves on exactly the `adamw` rule above.
  muon = optax.contrib.muon(
      schedule, beta=o.muon_beta, eps=o.eps, weight_decay=o.weight_decay,
      muon_weight_dimension_numbers=muon_dimension_numbers,
      consistent_rms=MUON_CONSISTENT_RMS)
  def labels(params):
    return jax.tree_util.tree_map_with_path(
        lambda p, x: "muon" if _is_block_matrix(p, x) else "adamw", params)
  return optax.partition({"muon": muon, "adamw": _adamw(o, schedule)},
                         labels)


def make_optimizer(o, schedule: optax.Schedule) -> optax.GradientTransformation:
  """The transformation for optim section `o` following `schedule`."""
  parts = []
  if o.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(o.clip_norm))
  parts.append(_muon_and_adamw(o, schedule) if o.name == "muon"
               else _adamw(o, schedule))
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
