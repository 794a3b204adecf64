"""The joint sequence in context-parallel order: each device a slice of all.

The model's joint sequence is segments of equal runs: video slots [B, V, T]
(one run of T tokens per shot) and text slots [B, G, L] (one run per group).
With `n` context devices, `stripe` pads every run to a multiple of n and
lays the sequence out as n contiguous chunks, chunk i holding rows
[i * R/n, (i+1) * R/n) of every run of every segment:

  chunk i = [shot 1 slice i, ..., shot N slice i ; prompt 0 slice i, ...]

Why: under context_causal the work of a query grows with its group, so
contiguous chunks of the natural order would leave the first devices idle;
here every chunk holds the same groups, hence the same work, and one static
tile schedule serves all devices (see `context.py`). And it is free: the
video stream is sharded over T already ([B, V, T, D] with T over 'context'),
so splitting T into (n, T/n) and moving n to the front only relabels the
local data. For n = 1 the order is the plain concatenation.

Works on numpy (static group ids) and jax arrays alike.
"""
from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np


def _xp(*xs):
  return np if all(isinstance(x, np.ndarray) for x in xs) else jnp


def run_pad(run: int, n: int) -> int:
  """Tokens per device of one run of `run` tokens."""
  return -(-run // n)


def stripe(segments: Sequence, n: int, *, edge: bool = False):
  """[x_k [B, P_k, R_k, ...]] -> [B, n * sum_k P_k * ceil(R_k / n), ...].

  Padding repeats a run's last entry if `edge` (group ids: padding stays in
  its run's group, so chunks stay identical) and is zero / False otherwise.
  """
  xp = _xp(*segments)
  batch = segments[0].shape[0]
  rest = segments[0].shape[3:]
  parts = []
  for x in segments:
    _, runs, run = x.shape[:3]
    per = run_pad(run, n)
    pad = [(0, 0)] * x.ndim
    pad[2] = (0, per * n - run)
    x = xp.pad(x, pad, mode="edge") if edge else xp.pad(x, pad)
    x = x.reshape(batch, runs, n, per, *rest)
    x = xp.moveaxis(x, 2, 1)                       # [B, n, P, R/n, ...]
    parts.append(x.reshape(batch, n, runs * per, *rest))
  return xp.concatenate(parts, axis=2).reshape(batch, -1, *rest)


def unstripe(x, shapes: Sequence[tuple[int, int]], n: int) -> list:
  """Inverse of `stripe`: [B, S', ...] -> [x_k [B, P_k, R_k, ...]]."""
  xp = _xp(x)
  batch, rest = x.shape[0], x.shape[2:]
  x = x.reshape(batch, n, -1, *rest)
  out, start = [], 0
  for runs, run in shapes:
    per = run_pad(run, n)
    part = x[:, :, start:start + runs * per].reshape(batch, n, runs, per,
                                                      *rest)
    part = xp.moveaxis(part, 1, 2).reshape(batch, runs, n * per, *rest)
    out.append(part[:, :, :run])
    start += runs * per
  return out


def striped_ids(ids_S: np.ndarray, shapes: Sequence[tuple[int, int]],
                n: int) -> np.ndarray:
  """Static group ids [S] (plain order) -> the striped order's ids."""
  segments, start = [], 0
  for runs, run in shapes:
    segments.append(ids_S[None, start:start + runs * run].reshape(1, runs,
                                                                  run))
    start += runs * run
  return stripe(segments, n, edge=True)[0]
