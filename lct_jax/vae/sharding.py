"""Jitting VAE functions, optionally data-parallel over the batch on a mesh.

The VAE is small (246M parameters at the real config) next to its
activations, so the parameters are replicated and the batch is split: each
device encodes or decodes its own videos and no collective runs. The
default batch axes are the project's (`lct_jax.parallel.RULES['batch']`,
those the mesh has), so latents come out sharded the way the training step
expects its batch.

`jit_vae(fn, mesh, batch_axes)` wraps any `fn(vae, x) -> arrays` (the
codec's `encode`, the model's per-tile `moments`) into `call(vae, x)`;
`bind(fn, vae, ...)` into `run(x)` for a loop of calls (the tiles). The
compiled function is cached per (fn, mesh, axes, options), then per input
shape.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lct_jax.parallel import RULES

BatchAxes = str | tuple[str, ...] | None


def batch_axes_of(mesh: Mesh, batch_axes: BatchAxes = None
                  ) -> tuple[str, ...]:
  """The mesh axes the batch splits over: `batch_axes`, or by default the
  project's batch rule restricted to the mesh's axes."""
  if batch_axes is None:
    rule = RULES["batch"]
    axes = (rule,) if isinstance(rule, str) else tuple(rule or ())
    return tuple(a for a in axes if a in mesh.axis_names)
  axes = (batch_axes,) if isinstance(batch_axes, str) else tuple(batch_axes)
  unknown = [a for a in axes if a not in mesh.axis_names]
  if unknown:
    raise ValueError(f"batch axes {axes}: {unknown} not in the mesh's axes "
                     f"{mesh.axis_names}")
  return axes


def batch_sharding(mesh: Mesh, batch_axes: BatchAxes = None
                   ) -> NamedSharding:
  """Dimension 0 split over the batch axes, the rest replicated."""
  return NamedSharding(mesh, P(batch_axes_of(mesh, batch_axes) or None))


def check_batch(mesh: Mesh, batch_axes: BatchAxes, batch: int) -> None:
  axes = batch_axes_of(mesh, batch_axes)
  n = math.prod(mesh.shape[a] for a in axes)
  if batch % n:
    raise ValueError(f"batch {batch} does not split over mesh axes {axes} "
                     f"({n} devices); use a multiple of {n}")


@functools.lru_cache(maxsize=None)
def _jitted(fn: Callable, mesh: Mesh | None, batch_axes: BatchAxes,
            options: tuple):
  merged = lambda graphdef, state, x: fn(nnx.merge(graphdef, state), x)
  kw = dict(static_argnums=0, compiler_options=dict(options) or None)
  if mesh is None:
    return jax.jit(merged, **kw)
  data = batch_sharding(mesh, batch_axes)
  return jax.jit(merged, in_shardings=(NamedSharding(mesh, P()), data),
                 out_shardings=data, **kw)


def jit_vae(fn: Callable, mesh: Mesh | None = None,
            batch_axes: BatchAxes = None, *,
            compiler_options: dict | None = None) -> Callable:
  """`fn(vae, x_B...) -> pytree of [B, ...]` -> jitted `call(vae, x)`.

  With a mesh, x and every output are split on dimension 0 over
  `batch_axes` (a ValueError if the batch does not divide) and the
  parameters replicated; without one, plain `jax.jit`. `compiler_options`
  go to XLA (e.g. {'xla_backend_optimization_level': 0}: CPU compiles in
  half the time, which the tests use).
  """
  def call(vae, x):
    return bind(fn, vae, mesh, batch_axes,
                compiler_options=compiler_options)(x)
  return call


def bind(fn: Callable, vae, mesh: Mesh | None = None,
         batch_axes: BatchAxes = None, *,
         compiler_options: dict | None = None) -> Callable:
  """`run(x) = fn(vae, x)`, jitted as `jit_vae`, with the model split (and,
  on a mesh, its parameters replicated to every device) once: for loops
  over tiles, where doing that per call would cost a graph traversal and,
  on a mesh, a transfer of every parameter."""
  jitted = _jitted(fn, mesh, batch_axes,
                   tuple(sorted((compiler_options or {}).items())))
  graphdef, state = nnx.split(vae)
  if mesh is not None:
    state = jax.device_put(state, NamedSharding(mesh, P()))

  def run(x):
    if mesh is not None:
      check_batch(mesh, batch_axes, x.shape[0])
    return jitted(graphdef, state, x)

  return run
