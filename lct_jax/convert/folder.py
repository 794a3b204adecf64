"""A local diffusers model folder: `config.json` + safetensors weights.

Accepted layouts (nothing is downloaded):
  FOLDER/config.json + diffusion_pytorch_model.safetensors
  FOLDER/config.json + diffusion_pytorch_model.safetensors.index.json + shards
  FOLDER/transformer/...    (a pipeline folder: its transformer subfolder)
"""
from __future__ import annotations

import glob
import json
import os

import numpy as np

from lct_jax.convert import safetensors_io

WEIGHTS = "diffusion_pytorch_model.safetensors"
INDEX = WEIGHTS + ".index.json"


def resolve(folder: str) -> str:
  """The folder that holds `config.json` (FOLDER or FOLDER/transformer)."""
  for candidate in (folder, os.path.join(folder, "transformer")):
    if os.path.isfile(os.path.join(candidate, "config.json")):
      return candidate
  raise FileNotFoundError(f"{folder}: no config.json here nor in "
                          f"{folder}/transformer (a diffusers model folder)")


def weights_path(folder: str) -> str:
  """The weights file (or index) of a resolved model folder."""
  for name in (INDEX, WEIGHTS):
    if os.path.isfile(os.path.join(folder, name)):
      return os.path.join(folder, name)
  others = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
  if len(others) == 1:
    return others[0]
  raise FileNotFoundError(
      f"{folder}: expected {WEIGHTS} or {INDEX}; found "
      f"{sorted(os.listdir(folder))}")


def load_folder(folder: str) -> tuple[dict, dict[str, np.ndarray]]:
  """-> (diffusers config dict, state dict of memory-mapped numpy arrays)."""
  folder = resolve(folder)
  with open(os.path.join(folder, "config.json")) as f:
    dconf = json.load(f)
  return dconf, safetensors_io.read_state_dict(weights_path(folder))


def save_folder(folder: str, dconf: dict, state_dict: dict[str, np.ndarray],
                *, max_shard_bytes: int = 0) -> None:
  """Writes a folder `from_pretrained` reads; sharded if max_shard_bytes."""
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(dconf, f, indent=1)
  if max_shard_bytes:
    safetensors_io.write_sharded(folder, state_dict,
                                 max_shard_bytes=max_shard_bytes)
  else:
    safetensors_io.write_safetensors(os.path.join(folder, WEIGHTS),
                                     state_dict, metadata={"format": "pt"})
