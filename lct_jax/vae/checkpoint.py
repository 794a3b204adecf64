"""The converted VAE checkpoint: orbax params + the diffusers config beside.

  DIR/params/          orbax `StandardCheckpointer` PyTree: the pure dict
                       `nnx.to_pure_dict(nnx.state(vae, nnx.Param))`
  DIR/vae_config.json  `VAEConfig.to_diffusers()` (a diffusers config.json)

The same layout as the transformer's (`lct_jax.convert.checkpoint`), with
the config under its own name so the two kinds of directory are never
mistaken for each other. Made by `python -m lct_jax.convert vae import`
(`lct_jax.convert.vae.save_checkpoint`, which writes it as the
transformer's is written: a failed save keeps the previous one); `load`
needs only this layer, so samplers can read it without the converter.
"""
from __future__ import annotations

import json
import os

import jax
import orbax.checkpoint as ocp

from lct_jax.vae import convert
from lct_jax.vae.config import VAEConfig
from lct_jax.vae.model import AutoencoderKL

PARAMS = "params"
CONFIG = "vae_config.json"


def is_checkpoint(path: str) -> bool:
  return (os.path.isdir(os.path.join(path, PARAMS)) and
          os.path.isfile(os.path.join(path, CONFIG)))


def load_config(path: str) -> VAEConfig:
  with open(os.path.join(path, CONFIG)) as f:
    return VAEConfig.from_diffusers(json.load(f))


def load_params(path: str, config: VAEConfig | None = None) -> dict:
  """The saved params, in their saved dtype, checked against the config."""
  if not is_checkpoint(path):
    raise FileNotFoundError(f"{path}: not a converted VAE checkpoint (no "
                            f"{PARAMS}/ and {CONFIG})")
  config = load_config(path) if config is None else config
  params_dir = os.path.join(os.path.abspath(path), PARAMS)
  ckptr = ocp.StandardCheckpointer()
  meta = ckptr.metadata(params_dir)
  meta = getattr(meta, "item_metadata", meta)
  saved = _by_str_path(getattr(meta, "tree", meta))
  want = convert.abstract_params(config)
  want_by_str = _by_str_path(want)
  name = lambda p: ".".join("weight" if k == "kernel" else k for k in p)
  shapes = [f"{name(p)}: saved {tuple(saved[p].shape)} vs config "
            f"{tuple(want_by_str[p].shape)}"
            for p in sorted(set(saved) & set(want_by_str))
            if tuple(saved[p].shape) != tuple(want_by_str[p].shape)]
  missing = {name(p) for p in set(want_by_str) - set(saved)}
  unexpected = {name(p) for p in set(saved) - set(want_by_str)}
  convert.raise_if(f"{path}: checkpoint params do not match its config",
                   config, [("missing", missing), ("unexpected", unexpected),
                            ("shape mismatches", shapes)])
  target = jax.tree_util.tree_map_with_path(
      lambda p, a: jax.ShapeDtypeStruct(
          a.shape, saved[tuple(str(k.key) for k in p)].dtype), want)
  return ckptr.restore(params_dir, target)


def _by_str_path(tree) -> dict:
  """{path with every key a string: leaf} (orbax metadata keys list
  indices as strings)."""
  return {tuple(str(k) for k in p): leaf
          for p, leaf in convert.flatten(tree).items()}


def load(path: str, config: VAEConfig | None = None) -> AutoencoderKL:
  """The VAE of a converted checkpoint directory."""
  config = load_config(path) if config is None else config
  return convert.model_from_params(config, load_params(path, config))
