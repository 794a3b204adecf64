"""TPU slices by their Cloud names, as devices the TPU compiler can target.

`libtpu` (the `tpu` extra) compiles for any TPU topology on a machine with no
TPU: `jax.experimental.topologies.get_topology_desc` hands out the devices of
a named topology, and a step jitted over a mesh of them is compiled by the
real TPU compiler, which reports its memory per device (and refuses a step
that does not fit). `slice_devices("v5p-128")` gives those devices.

Cloud names count what Cloud counts: TensorCores for v4, v5p and tpu7x
(v5p-128 = 64 chips; with megacore each chip is one jax device), chips for
v5e and v6e (v6e-256 = 256 chips). A raw topology string ("v5e:2x2",
"v5:4x4x4") is accepted too.

HBM per device is the compiler's own limit (what RESOURCE_EXHAUSTED reports),
read with libtpu 0.0.42.1; it is a little below the marketing figure (v5p:
95.74 GiB of 96).
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import math
import os
import re

GIB = 1024 ** 3


@dataclasses.dataclass(frozen=True)
class Generation:
  cloud: str               # Cloud TPU prefix: "v5p"
  topology: str            # libtpu's topology prefix: "v5"
  dims: int                # torus dimensions: 3 (v4, v5p, tpu7x) or 2
  cloud_units_per_device: int  # TensorCores counted per jax device
  chip_config: str | None  # get_topology_desc's chip_config_name
  hbm_bytes: int           # per device, the compiler's limit
  peak_bf16_flops: float | None  # per device, dense bf16 (public spec)
  devices_per_chip: int = 1   # tpu7x: two devices (TensorCores) per chip


GENERATIONS = {g.cloud: g for g in (
    Generation("v4", "v4", 3, 2, "megacore", int(30.75 * GIB), 275e12),
    Generation("v5p", "v5", 3, 2, "megacore", int(95.74 * GIB), 459e12),
    Generation("v5e", "v5e", 2, 1, None, int(15.75 * GIB), 197e12),
    Generation("v6e", "v6e", 2, 1, None, int(31.25 * GIB), 918e12),
    # Ironwood: each chip shows as two devices of 94.75 GiB; no public dense
    # bf16 figure per device is given here.
    Generation("tpu7x", "tpu7x", 3, 1, None, int(94.75 * GIB), None,
               devices_per_chip=2),
)}


@dataclasses.dataclass(frozen=True)
class TpuSlice:
  name: str                # as given: "v5p-128" or "v5e:2x2"
  generation: Generation
  topology: str            # "v5:4x4x4"
  num_devices: int

  @property
  def hbm_bytes(self) -> int:
    return self.generation.hbm_bytes

  def describe(self) -> str:
    return (f"{self.name} (topology {self.topology}, {self.num_devices} "
            f"devices of {self.hbm_bytes / GIB:.2f} GiB HBM)")


def _known() -> str:
  return ", ".join(f"{g}-N" for g in GENERATIONS)


def _chip_shape(chips: int, dims: int) -> tuple[int, ...]:
  """A power-of-two chip count (>= 4) as Cloud's torus shape.

  From one 2x2(x1) host, double the smallest axis (the last of equals):
  3D 2x2x1, 2x2x2, 2x2x4, 2x4x4, 4x4x4, 4x4x8 ... (v5p-128 = 4x4x4);
  2D 2x2, 2x4, 4x4, 4x8 ... 16x16 (v6e-256).
  """
  shape = [2, 2] + [1] * (dims - 2)
  while math.prod(shape) < chips:
    smallest = min(shape)
    i = max(a for a in range(dims) if shape[a] == smallest)
    shape[i] *= 2
  return tuple(shape)


def parse_slice(name: str) -> TpuSlice:
  """'v5p-128' | 'v6e-256' | 'tpu7x-64' | a topology like 'v5e:2x2'.

  Raises ValueError naming the name and what is known.
  """
  text = name.strip().lower()
  m = re.fullmatch(r"([a-z0-9]+):(\d+(?:x\d+)+)", text)
  if m:
    prefix, shape = m.group(1), tuple(int(s) for s in m.group(2).split("x"))
    gen = next((g for g in GENERATIONS.values()
                if prefix in (g.topology, g.cloud)), None)
    if gen is None:
      raise ValueError(f"TPU topology {name!r}: unknown generation "
                       f"{prefix!r} (known: {', '.join(GENERATIONS)})")
    if len(shape) != gen.dims:
      raise ValueError(f"TPU topology {name!r}: {gen.cloud} topologies have "
                       f"{gen.dims} dimensions")
    return TpuSlice(name, gen, f"{gen.topology}:{m.group(2)}",
                    math.prod(shape) * gen.devices_per_chip)
  m = re.fullmatch(r"([a-z0-9]+)-(\d+)", text)
  if not m or m.group(1) not in GENERATIONS:
    raise ValueError(f"unknown TPU slice {name!r}: expected one of {_known()}"
                     " (a Cloud TPU name such as v5p-128) or a topology "
                     "such as v5e:2x2")
  gen, units = GENERATIONS[m.group(1)], int(m.group(2))
  per_chip = gen.cloud_units_per_device * gen.devices_per_chip
  chips = units // per_chip
  if units % per_chip or chips < 1 or chips & (chips - 1):
    raise ValueError(f"TPU slice {name!r}: {gen.cloud} slices count "
                     f"{per_chip} per chip and come in powers of two chips; "
                     f"{units} is not one")
  if chips < 4:
    raise ValueError(f"TPU slice {name!r}: the compiler needs at least one "
                     f"host (4 chips, {gen.cloud}-{4 * per_chip}); take a "
                     "mesh over part of a larger slice instead")
  shape = _chip_shape(chips, gen.dims)
  return TpuSlice(name, gen, f"{gen.topology}:{'x'.join(map(str, shape))}",
                  chips * gen.devices_per_chip)


def check_libtpu() -> str:
  """The installed libtpu version; raises RuntimeError when it is missing or
  is not the one the installed jax pins in its `tpu` extra."""
  try:
    have = importlib.metadata.version("libtpu")
  except importlib.metadata.PackageNotFoundError:
    raise RuntimeError(
        "compiling for TPU needs libtpu, which is not installed: "
        "pip install -e '.[tpu]' (it pins the libtpu of the installed jax)"
    ) from None
  jax_version = importlib.metadata.version("jax")
  for req in importlib.metadata.requires("jax") or ():
    m = re.match(r"libtpu\s*==\s*([\w.*]+)\s*;.*extra\s*==\s*['\"]tpu",
                 req)
    if m:
      want = m.group(1)
      if not re.fullmatch(re.escape(want).replace(r"\*", ".*"), have):
        raise RuntimeError(
            f"libtpu {have} does not match jax {jax_version}, which needs "
            f"libtpu=={want}: pip install 'jax[tpu]=={jax_version}'")
  return have


def slice_devices(tpu_slice: TpuSlice):
  """The slice's jax devices (compile-only: nothing runs on them)."""
  check_libtpu()
  # Compile-only use of libtpu: without a TPU its start-up asks the cloud
  # metadata server who it is (these quiet that), and its lockfile would
  # stop two compiles, or a compile beside a training job, from running.
  os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5p-8")
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  # Imported here: only --compile_for needs it, and it loads libtpu.
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  kwargs = {}
  if tpu_slice.generation.chip_config:
    kwargs["chip_config_name"] = tpu_slice.generation.chip_config
  try:
    devices = topologies.get_topology_desc(
        topology_name=tpu_slice.topology, platform="tpu", **kwargs).devices
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"TPU slice {tpu_slice.name!r} (topology "
                     f"{tpu_slice.topology}): libtpu refused it: "
                     f"{str(e).splitlines()[0]}") from None
  if len(devices) != tpu_slice.num_devices:
    raise RuntimeError(f"{tpu_slice.describe()}: libtpu gave "
                       f"{len(devices)} devices")
  return list(devices)
