"""diffusers `AutoencoderKLHunyuanVideo` state dict <-> the NNX VAE's params.

The modules carry diffusers' names (`lct_jax.vae.layers`), so a parameter
path is its state-dict key: join with '.', `kernel` -> `weight`, and
  * conv kernels   torch [out, in, kt, kh, kw] <-> here [kt, kh, kw, in, out]
  * linear kernels torch [out, in]             <-> here [in, out]
e.g. ('encoder', 'down_blocks', 0, 'resnets', 1, 'conv1', 'conv', 'kernel')
  <-> 'encoder.down_blocks.0.resnets.1.conv1.conv.weight'.
Nothing else changes (no fused or stacked parameters), so export after
import gives back the same bytes.

The expected keys and shapes come from the model built abstractly from the
config; a state dict that disagrees fails with a ValueError listing the
missing keys, unexpected keys and shape mismatches (torch layout).
Pure: no files here (those are `lct_jax.vae.checkpoint` and
`lct_jax.convert.vae`).
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np
from flax import nnx

from lct_jax.vae.config import VAEConfig
from lct_jax.vae.model import AutoencoderKL, abstract, init_params

_MAX_LISTED = 20
_TO_TORCH = {5: (4, 3, 0, 1, 2), 2: (1, 0)}     # by ndim of the kernel
_FROM_TORCH = {5: (2, 3, 4, 1, 0), 2: (1, 0)}


def flatten(tree: Mapping) -> dict[tuple, Any]:
  """Nested params dict -> {path tuple: leaf} (list indices stay ints)."""
  return {tuple(k.key for k in keys): leaf for keys, leaf in
          jax.tree_util.tree_flatten_with_path(dict(tree))[0]}


def unflatten(flat: Mapping[tuple, Any]) -> dict:
  tree: dict = {}
  for path, leaf in flat.items():
    node = tree
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = leaf
  return tree


def abstract_params(config: VAEConfig) -> dict:
  """The pure params dict of the config's model, ShapeDtypeStruct leaves."""
  return nnx.to_pure_dict(nnx.state(abstract(config), nnx.Param))


def diffusers_key(path: tuple) -> str:
  """Parameter path -> diffusers state-dict key."""
  return ".".join("weight" if p == "kernel" else str(p) for p in path)


def _torch_shape(path: tuple, shape: tuple[int, ...]) -> tuple[int, ...]:
  if path[-1] == "kernel":
    return tuple(shape[i] for i in _TO_TORCH[len(shape)])
  return tuple(shape)


def expected_keys(config: VAEConfig) -> dict[str, tuple[tuple, tuple]]:
  """diffusers key -> (parameter path, the shape diffusers stores)."""
  return {diffusers_key(p): (p, _torch_shape(p, leaf.shape))
          for p, leaf in flatten(abstract_params(config)).items()}


def _listing(label: str, items) -> str:
  items = sorted(items)
  more = (f", ... ({len(items) - _MAX_LISTED} more)"
          if len(items) > _MAX_LISTED else "")
  return f"\n  {label} ({len(items)}): {', '.join(items[:_MAX_LISTED])}{more}"


def raise_if(what: str, config: VAEConfig, listed) -> None:
  if any(items for _, items in listed):
    raise ValueError(
        f"{what} (block_out_channels={list(config.block_out_channels)}, "
        f"layers_per_block={config.layers_per_block}, latent_channels="
        f"{config.latent_channels}, mid_block_add_attention="
        f"{config.mid_block_add_attention}):"
        + "".join(_listing(label, items) for label, items in listed if items))


def import_state_dict(state_dict: Mapping[str, Any], config: VAEConfig, *,
                      dtype=np.float32) -> dict:
  """diffusers state dict (numpy or CPU torch tensors) -> params pure dict
  (numpy, `dtype`), laid out as `nnx.to_pure_dict(nnx.state(vae))`."""
  expected = expected_keys(config)
  given = set(state_dict)
  shapes = [f"{k}: state dict {tuple(state_dict[k].shape)} vs config "
            f"{expected[k][1]}" for k in sorted(given & set(expected))
            if tuple(state_dict[k].shape) != expected[k][1]]
  raise_if("VAE state dict does not match the config", config,
            [("missing keys", set(expected) - given),
             ("unexpected keys", given - set(expected)),
             ("shape mismatches", shapes)])
  flat = {}
  for key, (path, _) in expected.items():
    w = _as_numpy(state_dict[key])
    if path[-1] == "kernel":
      w = w.transpose(_FROM_TORCH[w.ndim])
    flat[path] = np.ascontiguousarray(w.astype(dtype))
  return unflatten(flat)


def check_params(params: Mapping, config: VAEConfig) -> None:
  """Raises ValueError naming the params (as diffusers keys) that are
  missing, unexpected or misshapen for the config's model."""
  flat = flatten(params)
  want = {p: tuple(leaf.shape) for p, leaf in
          flatten(abstract_params(config)).items()}
  shapes = [f"{diffusers_key(p)}: params {tuple(np.shape(flat[p]))} vs "
            f"config {want[p]}" for p in sorted(set(want) & set(flat), key=str)
            if tuple(np.shape(flat[p])) != want[p]]
  raise_if("VAE params do not match the config", config,
           [("missing", {diffusers_key(p) for p in set(want) - set(flat)}),
            ("unexpected", {diffusers_key(p) for p in set(flat) - set(want)}),
            ("shape mismatches", shapes)])


def export_state_dict(params: Mapping, config: VAEConfig, *,
                      dtype=None) -> dict[str, np.ndarray]:
  """Params pure dict -> diffusers state dict of numpy arrays (`dtype`, or
  each parameter's own)."""
  check_params(params, config)
  out = {}
  for path, value in flatten(params).items():
    w = np.asarray(value) if dtype is None else np.asarray(value).astype(dtype)
    if path[-1] == "kernel":
      w = w.transpose(_TO_TORCH[w.ndim])
    out[diffusers_key(path)] = np.ascontiguousarray(w)
  return out


def model_from_params(config: VAEConfig, params: Mapping) -> AutoencoderKL:
  """The VAE holding `params` (numpy or jax arrays, kept in their dtype)."""
  check_params(params, config)
  graphdef, state = nnx.split(abstract(config))
  nnx.replace_by_pure_dict(state, jax.tree.map(jax.numpy.asarray,
                                               dict(params)))
  return nnx.merge(graphdef, state)


def init(config: VAEConfig, seed: int = 0) -> AutoencoderKL:
  """A randomly initialised VAE (torch's default init, `init_params`)."""
  return model_from_params(config, init_params(config, seed))


def params_of(vae: AutoencoderKL) -> dict:
  """The model's params as a pure dict (the inverse of model_from_params)."""
  return nnx.to_pure_dict(nnx.state(vae, nnx.Param))


def _as_numpy(x) -> np.ndarray:
  """numpy, jax or CPU torch tensor -> numpy, without importing torch."""
  if hasattr(x, "detach"):
    x = x.detach().cpu()
    if str(x.dtype) == "torch.bfloat16":
      x = x.float()
    return x.numpy()
  return np.asarray(x)
