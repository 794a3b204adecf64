"""Device mesh construction with errors that name the problem."""
from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from lct_jax.parallel.logical import MESH_AXES


def mesh_shape(mesh_config, num_devices: int) -> tuple[int, ...]:
  """Resolves one -1 entry to 'all remaining devices'; checks the product."""
  sizes = [int(mesh_config[a]) for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"mesh: at most one axis may be -1, got "
                     f"{dict(zip(MESH_AXES, sizes))}")
  for axis, size in zip(MESH_AXES, sizes):
    if size == 0 or size < -1:
      raise ValueError(f"mesh.{axis}={size} must be positive or -1")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(
          f"mesh {dict(zip(MESH_AXES, sizes))}: the fixed axes multiply to "
          f"{known}, which does not divide the {num_devices} devices")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(
        f"mesh {dict(zip(MESH_AXES, sizes))} has {math.prod(sizes)} devices "
        f"but {num_devices} are available")
  return tuple(sizes)


def parse_mesh(text: str) -> dict[str, int]:
  """'context=4,tensor=2' -> every mesh axis's size (unnamed axes 1).

  The command-line form of a mesh (sample.py --mesh); '' is one device.
  """
  sizes = dict.fromkeys(MESH_AXES, 1)
  for item in filter(None, (t.strip() for t in text.split(","))):
    axis, eq, value = item.partition("=")
    axis = axis.strip()
    if not eq or axis not in sizes:
      raise ValueError(f"mesh {text!r}: {item!r} is not AXIS=SIZE with AXIS "
                       f"one of {MESH_AXES}")
    try:
      sizes[axis] = int(value)
    except ValueError:
      raise ValueError(f"mesh {text!r}: size {value!r} of {axis!r} is not "
                       "an integer") from None
  return sizes


def make_mesh(mesh_config, devices=None) -> Mesh:
  """An Auto-typed ('data', 'fsdp', 'context', 'tensor') mesh.

  Auto axes (not the jax>=0.9 default Explicit) so logical sharding
  constraints act as hints; enter the mesh with `jax.set_mesh(mesh)`.
  """
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(mesh_config, len(devices))
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES,
              axis_types=(AxisType.Auto,) * len(MESH_AXES))
