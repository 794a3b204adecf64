"""Reading and writing `.safetensors` files with numpy only (no torch).

The format: an 8-byte little-endian header length N, N bytes of JSON
`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__"}`,
then the raw little-endian tensor bytes (offsets relative to the end of the
header). bfloat16 and float8 come from `ml_dtypes` (a JAX dependency), so
the bfloat16 HunyuanVideo checkpoints read without torch. Files are memory
mapped: a tensor is read when it is used.

A sharded checkpoint is a `*.safetensors.index.json` whose `weight_map`
names the shard file of every tensor.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Mapping

import ml_dtypes
import numpy as np

_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16), "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in _DTYPES.items()}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """All tensors of one file, as read-only arrays backed by a memory map."""
  with open(path, "rb") as f:
    head = f.read(8)
    if len(head) != 8:
      raise ValueError(f"{path}: not a safetensors file (shorter than 8 "
                       "bytes)")
    (n,) = struct.unpack("<Q", head)
    try:
      header = json.loads(f.read(n))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise ValueError(f"{path}: not a safetensors file (bad header: {e})"
                       ) from None
  data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n) if (
      os.path.getsize(path) > 8 + n) else np.zeros(0, np.uint8)
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if info["dtype"] not in _DTYPES:
      raise ValueError(f"{path}: tensor {name!r} has dtype {info['dtype']}, "
                       f"not one of {sorted(_DTYPES)}")
    dtype = _DTYPES[info["dtype"]]
    begin, end = info["data_offsets"]
    shape = tuple(info["shape"])
    count = int(np.prod(shape, dtype=np.int64))
    if end - begin != count * dtype.itemsize:
      raise ValueError(f"{path}: tensor {name!r} has {end - begin} bytes "
                       f"for shape {shape} of {info['dtype']}")
    out[name] = data[begin:end].view(dtype).reshape(shape)
  return out


def write_safetensors(path: str, tensors: Mapping[str, np.ndarray],
                      metadata: Mapping[str, str] | None = None) -> None:
  """Writes `tensors` (numpy arrays) as one safetensors file."""
  header, offset, arrays = {}, 0, []
  for name in sorted(tensors):
    a = np.ascontiguousarray(tensors[name])
    if a.dtype not in _NAMES:
      raise ValueError(f"tensor {name!r}: dtype {a.dtype} cannot be written")
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    header[name] = {"dtype": _NAMES[a.dtype], "shape": list(a.shape),
                    "data_offsets": [offset, offset + a.nbytes]}
    offset += a.nbytes
    arrays.append(a)
  if metadata:
    header["__metadata__"] = dict(metadata)
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)      # the format aligns data to 8 bytes
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for a in arrays:
      f.write(a.tobytes())


def read_sharded(index_path: str) -> dict[str, np.ndarray]:
  """All tensors named by a `*.safetensors.index.json` weight map."""
  with open(index_path) as f:
    weight_map = json.load(f)["weight_map"]
  folder = os.path.dirname(index_path)
  out = {}
  for shard in sorted(set(weight_map.values())):
    tensors = read_safetensors(os.path.join(folder, shard))
    for name, value in tensors.items():
      if weight_map.get(name) == shard:
        out[name] = value
  missing = sorted(set(weight_map) - set(out))
  if missing:
    raise ValueError(f"{index_path}: {len(missing)} tensors named in the "
                     f"weight map are not in their shard: {missing[:20]}")
  return out


def write_sharded(folder: str, tensors: Mapping[str, np.ndarray], *,
                  max_shard_bytes: int,
                  prefix: str = "diffusion_pytorch_model") -> str:
  """Writes shards + `{prefix}.safetensors.index.json`; returns its path."""
  shards, current, size = [], {}, 0
  for name in sorted(tensors):
    nbytes = np.asarray(tensors[name]).nbytes
    if current and size + nbytes > max_shard_bytes:
      shards.append(current)
      current, size = {}, 0
    current[name] = tensors[name]
    size += nbytes
  shards.append(current)
  weight_map = {}
  for i, shard in enumerate(shards):
    fname = f"{prefix}-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    write_safetensors(os.path.join(folder, fname), shard)
    weight_map.update({name: fname for name in shard})
  index = os.path.join(folder, f"{prefix}.safetensors.index.json")
  total = sum(np.asarray(t).nbytes for t in tensors.values())
  with open(index, "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map},
              f, indent=1, sort_keys=True)
  return index


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """A `.safetensors` file or a `.safetensors.index.json` -> tensors."""
  if path.endswith(".index.json"):
    return read_sharded(path)
  if path.endswith(".safetensors"):
    return read_safetensors(path)
  raise ValueError(f"{path}: expected a .safetensors file or a "
                   ".safetensors.index.json (torch .bin pickles are not "
                   "read; convert them with diffusers' save_pretrained)")
