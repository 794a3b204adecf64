"""diffusers `HunyuanVideoTransformer3DModel` <-> this project's MMDiT.

Parameter names were chosen to be diffusers' names (docs/design.md section 11), so
a Flax path maps to a diffusers key by a fixed rewrite:
  * `kernel` -> `weight`, transposed ([in, out] vs torch's [out, in]);
  * `to_out_0` -> `to_out.0`, `net_0_proj` -> `net.0.proj`, `net_2` -> `net.2`;
  * stacked (scanned) blocks hold layer l at index l of a leading axis:
    `transformer_blocks.attn.to_q.kernel[l]` <->
    `transformer_blocks.l.attn.to_q.weight`;
  * the patch embedding is a strided Conv3d in diffusers, weight
    [D, C, pt, p, p]; here a linear over patch features ordered (c, pt, p, p),
    so its kernel is `weight.reshape(D, -1).T`.

The expected key set and shapes come from the model built (abstractly, no
memory) from the config, so a state dict that disagrees with the config
fails with a message listing the keys or shapes involved.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import ml_collections
import numpy as np

from lct_jax import configlib
from lct_jax.training.state import abstract_model

CLASS_NAME = "HunyuanVideoTransformer3DModel"
SUPPORTED_IMAGE_CONDITION_TYPES = (None,)

# diffusers' __init__ arguments and defaults (diffusers 0.3x-0.42): a missing
# field in config.json means the default, as in diffusers itself.
DIFFUSERS_DEFAULTS = {
    "in_channels": 16, "out_channels": 16, "num_attention_heads": 24,
    "attention_head_dim": 128, "num_layers": 20, "num_single_layers": 40,
    "num_refiner_layers": 2, "mlp_ratio": 4.0, "patch_size": 2,
    "patch_size_t": 1, "qk_norm": "rms_norm", "guidance_embeds": True,
    "text_embed_dim": 4096, "pooled_projection_dim": 768, "rope_theta": 256.0,
    "rope_axes_dim": (16, 56, 56), "image_condition_type": None,
}

# diffusers config fields that are a model field as they are, both ways.
_SAME_FIELDS = {
    "in_channels": "in_channels", "num_attention_heads": "num_heads",
    "attention_head_dim": "head_dim", "num_layers": "depth",
    "num_single_layers": "num_single_layers",
    "num_refiner_layers": "num_refiner_layers", "patch_size": "patch",
    "patch_size_t": "patch_t", "text_embed_dim": "text_embed_dim",
    "pooled_projection_dim": "pooled_dim"}

STACKED = (("transformer_blocks",), ("single_transformer_blocks",),
           ("context_embedder", "token_refiner", "refiner_blocks"))
_RENAMES = {"to_out_0": "to_out.0", "net_0_proj": "net.0.proj",
            "net_2": "net.2", "kernel": "weight"}
# With no refiner blocks diffusers still builds (and runs, for nothing) the
# refiner's conditioning embedder; these keys carry no information here.
_UNUSED_WITHOUT_REFINER = "context_embedder.time_text_embed."
_MAX_LISTED = 20


# --- configs ---------------------------------------------------------------
def config_from_diffusers(dconf: Mapping[str, Any],
                          base: ml_collections.ConfigDict | None = None
                          ) -> ml_collections.ConfigDict:
  """diffusers `config.json` (a dict) -> a full config (model fields set).

  The architecture fields come from `dconf` (text given as embeddings,
  pooled text on, timesteps scaled by 1000 as diffusers expects); all else
  (scene, training, data, kernels, `text_rope`) from `base`. Without `base`
  (`configlib.base_config()`), `text_rope=False`: the result is then the
  pre-trained single-shot model exactly (the `text_rope` stage turns it on).
  """
  class_name = dconf.get("_class_name", CLASS_NAME)
  if class_name != CLASS_NAME:
    raise ValueError(f"config.json describes a {class_name!r}; only "
                     f"{CLASS_NAME!r} converts")
  unknown = sorted(k for k in dconf
                   if not k.startswith("_") and k not in DIFFUSERS_DEFAULTS)
  if unknown:
    raise ValueError(f"config.json has fields this converter does not know: "
                     f"{unknown}; known: {sorted(DIFFUSERS_DEFAULTS)}")
  d = {**DIFFUSERS_DEFAULTS, **{k: v for k, v in dconf.items()
                                 if not k.startswith("_")}}
  if d["image_condition_type"] not in SUPPORTED_IMAGE_CONDITION_TYPES:
    raise ValueError(
        f"image_condition_type={d['image_condition_type']!r} is not "
        f"supported; supported: {list(SUPPORTED_IMAGE_CONDITION_TYPES)} "
        "(LCT conditions on images through clean shots, not through "
        "'latent_concat' channels or 'token_replace' blocks)")
  if d["qk_norm"] != "rms_norm":
    raise ValueError(f"qk_norm={d['qk_norm']!r} is not supported; "
                     "supported: ['rms_norm']")
  c = (configlib.base_config() if base is None
       else base.copy_and_resolve_references())
  m = c.model
  for dkey, field in _SAME_FIELDS.items():
    m[field] = d[dkey]
  m.out_channels = d["out_channels"] or d["in_channels"]
  m.width = m.num_heads * m.head_dim
  m.mlp_ratio, m.rope_theta = float(d["mlp_ratio"]), float(d["rope_theta"])
  m.guidance_embeds = bool(d["guidance_embeds"])
  m.rope_axes_dim = tuple(int(a) for a in d["rope_axes_dim"])
  m.text_mode, m.use_pooled_text = "embeddings", True
  if base is None:
    m.text_rope = False         # the legacy layout diffusers implements
  m.timestep_scale = 1000.0     # diffusers takes t in [0, 1000]
  m.zero_init = False           # no meaning for loaded weights
  configlib.validate(c)
  return c


def diffusers_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The diffusers `config.json` fields of this config's model."""
  check_exportable(config)
  m = config.model
  return {"_class_name": CLASS_NAME,
          **{dkey: m[field] for dkey, field in _SAME_FIELDS.items()},
          "out_channels": m.out_channels or m.in_channels,
          "mlp_ratio": m.mlp_ratio, "rope_theta": m.rope_theta,
          "guidance_embeds": m.guidance_embeds,
          "rope_axes_dim": list(m.rope_axes_dim), "qk_norm": "rms_norm",
          "image_condition_type": None}


def check_exportable(config: ml_collections.ConfigDict) -> None:
  """Raises if the model has parts diffusers' model cannot hold."""
  m = config.model
  problems = []
  if m.text_mode != "embeddings":
    problems.append(f"model.text_mode={m.text_mode!r} (a learned vocabulary; "
                    "diffusers takes text embeddings: use 'embeddings')")
  if not m.use_pooled_text:
    problems.append("model.use_pooled_text=False (diffusers always adds the "
                    "pooled text projection)")
  if problems:
    raise ValueError("config has no diffusers equivalent: "
                     + "; ".join(problems))


# --- parameter names ----------------------------------------------------------
def abstract_params(config: ml_collections.ConfigDict) -> dict:
  """The model's parameter tree as ShapeDtypeStructs (nothing allocated)."""
  return abstract_model(config)[1]


def _stack_prefix(path: tuple[str, ...]) -> int:
  for prefix in STACKED:
    if path[:len(prefix)] == prefix:
      return len(prefix)
  return 0


def _layers(path: tuple[str, ...], shape) -> list:
  """The layers of a parameter: each index of a stacked block's leading
  axis, or [None] for an unstacked one."""
  return list(range(shape[0])) if _stack_prefix(path) else [None]


def diffusers_key(path: tuple[str, ...], layer: int | None = None) -> str:
  """Flax parameter path (+ layer for stacked blocks) -> diffusers key."""
  parts = [_RENAMES.get(p, p) for p in path]
  n = _stack_prefix(path)
  if n:
    parts.insert(n, str(layer))
  return ".".join(parts)


def flatten(tree: dict) -> dict[tuple[str, ...], Any]:
  """Nested params dict -> {path tuple: leaf}."""
  out = {}
  for keys, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    out[tuple(str(k.key) for k in keys)] = leaf
  return out


def _unflat(flat: Mapping[tuple[str, ...], Any]) -> dict:
  tree: dict = {}
  for path, leaf in flat.items():
    node = tree
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = leaf
  return tree


def _is_patch_kernel(path) -> bool:
  return path == ("x_embedder", "proj", "kernel")


def _diffusers_shape(path, flax_shape, config) -> tuple[int, ...]:
  """Per-layer Flax shape -> the shape diffusers stores under that key."""
  if _is_patch_kernel(path):
    m = config.model
    return (flax_shape[1], m.in_channels, m.patch_t, m.patch, m.patch)
  if path[-1] == "kernel":
    return tuple(reversed(flax_shape))
  return tuple(flax_shape)


def _to_flax(path, w: np.ndarray) -> np.ndarray:
  if _is_patch_kernel(path):
    return w.reshape(w.shape[0], -1).T
  return w.T if path[-1] == "kernel" else w


def _to_diffusers(path, w: np.ndarray, config) -> np.ndarray:
  if _is_patch_kernel(path):
    return w.T.reshape(_diffusers_shape(path, w.shape, config))
  return w.T if path[-1] == "kernel" else w


def expected_keys(config) -> dict[str, tuple[tuple[str, ...], int | None,
                                         tuple[int, ...]]]:
  """Every diffusers key the config's model has -> (Flax path, layer or
  None, the shape diffusers stores)."""
  out = {}
  for path, leaf in flatten(abstract_params(config)).items():
    for layer in _layers(path, leaf.shape):
      shape = leaf.shape if layer is None else leaf.shape[1:]
      out[diffusers_key(path, layer)] = (
          path, layer, _diffusers_shape(path, shape, config))
  return out


def _listing(what: str, keys, sep: str = ", ") -> str:
  keys = sorted(keys)
  shown = sep.join(keys[:_MAX_LISTED])
  more = (f", ... ({len(keys) - _MAX_LISTED} more)"
          if len(keys) > _MAX_LISTED else "")
  return f"\n  {what} ({len(keys)}): {shown}{more}"


def _check_match(what: str, config, listed) -> None:
  """Raises ValueError naming the model and listing each non-empty
  (label, keys, separator) of `listed`."""
  if not any(keys for _, keys, _ in listed):
    return
  m = config.model
  raise ValueError(
      f"{what} (num_layers={m.depth}, num_single_layers="
      f"{m.num_single_layers}, num_refiner_layers={m.num_refiner_layers}, "
      f"width={m.width}, guidance_embeds={m.guidance_embeds}):"
      + "".join(_listing(label, keys, sep) for label, keys, sep in listed
                if keys))


# --- import / export -------------------------------------------------------
def import_state_dict(state_dict: Mapping[str, Any],
                      config: ml_collections.ConfigDict, *,
                      dtype=np.float32) -> dict:
  """diffusers state dict (numpy or torch tensors) -> Flax params (pure dict).

  The result has the layout of `nnx.to_pure_dict(nnx.state(model,
  nnx.Param))`; put it into a model with `nnx.replace_by_pure_dict`.
  Raises ValueError listing missing / unexpected keys and shape mismatches.
  """
  check_exportable(config)
  expected = expected_keys(config)
  given = set(state_dict)
  ignored = set()
  if not config.model.num_refiner_layers:
    ignored = {k for k in given if k.startswith(_UNUSED_WITHOUT_REFINER)}
  missing = set(expected) - given
  unexpected = given - set(expected) - ignored
  shapes = [f"{k}: state dict {tuple(state_dict[k].shape)} vs config "
            f"{expected[k][2]}" for k in sorted(given & set(expected))
            if tuple(state_dict[k].shape) != expected[k][2]]
  _check_match("diffusers state dict does not match the config", config,
               [("missing keys", missing, ", "),
                ("unexpected keys", unexpected, ", "),
                ("shape mismatches", shapes, "; ")])

  per_path: dict[tuple[str, ...], dict] = {}
  for key, (path, layer, _) in expected.items():
    w = _to_flax(path, _as_numpy(state_dict[key])).astype(dtype)
    per_path.setdefault(path, {})[layer] = w
  flat = {}
  for path, layers in per_path.items():
    if None in layers:
      flat[path] = np.ascontiguousarray(layers[None])
    else:
      flat[path] = np.stack([layers[i] for i in range(len(layers))])
  return _unflat(flat)


def export_state_dict(params: Mapping, config: ml_collections.ConfigDict, *,
                      dtype=np.float32, fill_unused: bool = True
                      ) -> dict[str, np.ndarray]:
  """Flax params (pure dict) -> diffusers state dict of numpy arrays.

  With `fill_unused` and no refiner blocks, the refiner embedder that
  diffusers builds anyway is written as zeros, so that
  `load_state_dict(strict=True)` accepts the result; it does not change the
  output (diffusers discards it without refiner blocks).
  """
  check_exportable(config)
  flat = flatten(dict(params))
  want = {p: leaf.shape for p, leaf in flatten(abstract_params(config)).items()}
  missing, unexpected = set(want) - set(flat), set(flat) - set(want)
  shapes = [f"{'.'.join(p)}: params {tuple(np.shape(flat[p]))} vs config "
            f"{tuple(want[p])}" for p in sorted(set(want) & set(flat))
            if tuple(np.shape(flat[p])) != tuple(want[p])]
  _check_match("params do not match the config", config,
               [("missing", [".".join(p) for p in missing], ", "),
                ("unexpected", [".".join(p) for p in unexpected], ", "),
                ("shape mismatches", shapes, "; ")])
  out = {}
  for path, value in flat.items():
    w = np.asarray(value, dtype=dtype)
    for layer in _layers(path, w.shape):
      out[diffusers_key(path, layer)] = np.ascontiguousarray(_to_diffusers(
          path, w if layer is None else w[layer], config))
  if fill_unused and not config.model.num_refiner_layers:
    m = config.model
    for name, d_in in (("timestep_embedder", 256),
                       ("text_embedder", m.text_embed_dim)):
      pre = f"{_UNUSED_WITHOUT_REFINER}{name}"
      out[f"{pre}.linear_1.weight"] = np.zeros((m.width, d_in), dtype)
      out[f"{pre}.linear_1.bias"] = np.zeros((m.width,), dtype)
      out[f"{pre}.linear_2.weight"] = np.zeros((m.width, m.width), dtype)
      out[f"{pre}.linear_2.bias"] = np.zeros((m.width,), dtype)
  return out


def _as_numpy(x) -> np.ndarray:
  """numpy, jax or torch (CPU) tensor -> numpy, without importing torch."""
  if hasattr(x, "detach"):           # a torch tensor
    x = x.detach().cpu()
    if str(x.dtype) == "torch.bfloat16":
      x = x.float()
    return x.numpy()
  return np.asarray(x)
