"""Loading and writing HunyuanVideo VAE weights: diffusers folders and the
converted checkpoint (`lct_jax.vae.checkpoint`).

  load_vae(path)       a diffusers VAE folder (FOLDER/config.json +
                       diffusion_pytorch_model.safetensors[.index.json]), a
                       pipeline folder (its vae/ subfolder), or a converted
                       checkpoint directory -> AutoencoderKL
  import_folder(src, dst)   diffusers folder -> converted checkpoint
  export_folder(src, dst)   converted checkpoint -> diffusers folder that
                            AutoencoderKLHunyuanVideo.from_pretrained reads
CLI: `python -m lct_jax.convert vae import|export` (`__main__.py`). Here,
in the converter's layer, because the safetensors reader lives here; the
VAE package itself (layer 3) reads only converted checkpoints.
"""
from __future__ import annotations

import json
import os

import numpy as np

from lct_jax.convert import checkpoint as ckpt_io
from lct_jax.convert import folder as folder_io
from lct_jax.convert import safetensors_io
from lct_jax.vae import checkpoint, convert
from lct_jax.vae.config import VAEConfig
from lct_jax.vae.model import AutoencoderKL


def resolve(path: str) -> str:
  """The folder holding the VAE's config.json: PATH or PATH/vae."""
  for candidate in (path, os.path.join(path, "vae")):
    if os.path.isfile(os.path.join(candidate, "config.json")):
      return candidate
  raise FileNotFoundError(f"{path}: no config.json here nor in {path}/vae "
                          "(a diffusers VAE folder), and not a converted "
                          f"checkpoint ({checkpoint.PARAMS}/ + "
                          f"{checkpoint.CONFIG})")


def read_folder(path: str) -> tuple[VAEConfig, dict[str, np.ndarray]]:
  """-> (config, state dict of memory-mapped numpy arrays)."""
  path = resolve(path)
  with open(os.path.join(path, "config.json")) as f:
    config = VAEConfig.from_diffusers(json.load(f))
  return config, safetensors_io.read_state_dict(folder_io.weights_path(path))


def load_params(path: str, *, dtype=np.float32
                ) -> tuple[VAEConfig, dict]:
  """(config, params pure dict) of a diffusers folder or a checkpoint;
  `dtype` applies to diffusers weights (a checkpoint keeps its own)."""
  if checkpoint.is_checkpoint(path):
    config = checkpoint.load_config(path)
    return config, checkpoint.load_params(path, config)
  config, state_dict = read_folder(path)
  return config, convert.import_state_dict(state_dict, config, dtype=dtype)


def load_vae(path: str, *, dtype=np.float32) -> AutoencoderKL:
  """The VAE of a diffusers (pipeline) folder or a converted checkpoint."""
  return convert.model_from_params(*load_params(path, dtype=dtype))


def save_checkpoint(path: str, params: dict, config: VAEConfig, *,
                    overwrite: bool = False) -> None:
  """Writes a converted VAE checkpoint (`lct_jax.vae.checkpoint` layout);
  `params` are checked against the config first."""
  convert.check_params(params, config)
  ckpt_io.write_dir(path, params, {checkpoint.CONFIG: json.dumps(
      config.to_diffusers(), indent=1)}, overwrite=overwrite)


def import_folder(src: str, dst: str, *, dtype=np.float32,
                  overwrite: bool = False) -> tuple[VAEConfig, int]:
  """diffusers folder -> converted checkpoint; -> (config, tensor count)."""
  config, state_dict = read_folder(src)
  params = convert.import_state_dict(state_dict, config, dtype=dtype)
  save_checkpoint(dst, params, config, overwrite=overwrite)
  return config, len(state_dict)


def export_folder(src: str, dst: str, *, dtype=None) -> int:
  """Converted checkpoint -> diffusers folder; -> tensor count."""
  config = checkpoint.load_config(src)
  params = checkpoint.load_params(src, config)
  state_dict = convert.export_state_dict(params, config, dtype=dtype)
  folder_io.save_folder(dst, config.to_diffusers(), state_dict)
  return len(state_dict)
