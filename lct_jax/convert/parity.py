"""Parity harness: one random single-shot input, run by diffusers and by Flax.

Used by tests/test_parity.py and benchmarks/parity_speed.py. torch and
diffusers are imported only inside the functions that need them (the
`parity` extra), so importing this module costs nothing.

The degenerate mode (docs/design.md section 11): one shot slot, `text_rope=False`,
video positions from 0, an empty global prompt (group 0, all padding, so
masked out everywhere), the shot's prompt in group 1 padded at the end.
diffusers takes `timestep = t * 1000` and `guidance = g * 1000`.
"""
from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from lct_jax.convert import hunyuan
from lct_jax.model import MMDiT


def tiny_diffusers_config(**overrides) -> dict[str, Any]:
  """A diffusers config.json dict that runs in milliseconds on CPU."""
  d = dict(in_channels=4, out_channels=4, num_attention_heads=2,
           attention_head_dim=16, num_layers=1, num_single_layers=1,
           num_refiner_layers=1, mlp_ratio=2.0, patch_size=2, patch_size_t=1,
           qk_norm="rms_norm", guidance_embeds=False, text_embed_dim=24,
           pooled_projection_dim=12, rope_theta=256.0, rope_axes_dim=[4, 6, 6],
           image_condition_type=None)
  d.update(overrides)
  return d


def degenerate_config(dconf: dict, *, frames: int, height: int, width: int,
                      text_len: int, attention_impl: str = "dense"
                      ) -> ml_collections.ConfigDict:
  """The lct-jax config of `dconf` at one shot slot of the given sizes."""
  c = hunyuan.config_from_diffusers(dconf)
  c.scene.max_shots = 1
  c.scene.max_text_len = text_len
  c.scene.frames, c.scene.height, c.scene.width = frames, height, width
  c.model.attention_impl = attention_impl
  c.model.remat_policy = "none"
  return c


def random_diffusers_model(dconf: dict, seed: int, *, scale: float = 1.0):
  """diffusers model, every parameter random (no path left at a constant).

  Linear and conv weights keep torch's default init (uniform, std
  1/sqrt(3 fan_in)) times `scale`; biases are uniform in the same range;
  norm scales are 1 + 0.1 N(0, 1) instead of exactly 1.
  """
  import torch  # pylint: disable=g-import-not-at-top
  from diffusers import (  # pylint: disable=g-import-not-at-top
      HunyuanVideoTransformer3DModel)
  torch.manual_seed(seed)
  model = HunyuanVideoTransformer3DModel(**{
      k: v for k, v in dconf.items() if not k.startswith("_")})
  gen = torch.Generator().manual_seed(seed)
  fan_in = {}
  for name, p in model.named_parameters():
    if p.ndim > 1:
      fan_in[name.rsplit(".", 1)[0]] = int(np.prod(p.shape[1:]))
  with torch.no_grad():
    for name, p in model.named_parameters():
      module = name.rsplit(".", 1)[0]
      u = torch.rand(p.shape, generator=gen) * 2 - 1
      if module in fan_in:                       # linear / conv weight, bias
        p.copy_(scale * u / np.sqrt(fan_in[module]))
      else:                                      # norm scales (and biases)
        is_scale = name.endswith("weight")
        p.copy_((1.0 if is_scale else 0.0) + 0.1 * u * np.sqrt(3))
  return model.eval().float()


def random_inputs(config: ml_collections.ConfigDict, text_lens, seed: int
                  ) -> dict[str, np.ndarray]:
  """Flax-layout inputs for a batch of single-shot scenes.

  `text_lens[b]` real prompt tokens (padding at the end, as diffusers needs).
  """
  rng = np.random.default_rng(seed)
  m, s = config.model, config.scene
  B, L = len(text_lens), s.max_text_len
  text = rng.standard_normal((B, 2, L, m.text_embed_dim)).astype(np.float32)
  text_len = np.stack([np.zeros(B), np.asarray(text_lens)], 1).astype(np.int32)
  text = np.where(np.arange(L)[None, None, :, None] < text_len[..., None, None],
                  text, 0.0).astype(np.float32)
  return {
      "latents": rng.standard_normal(
          (B, 1, s.frames, s.height, s.width, m.in_channels)
      ).astype(np.float32),
      "t": rng.uniform(0.05, 0.95, (B, 1)).astype(np.float32),
      "text": text,
      "text_len": text_len,
      "num_frames": np.full((B, 1), s.frames, np.int32),
      "pooled": rng.standard_normal((B, 2, m.pooled_dim)).astype(np.float32),
      "guidance": rng.uniform(1.0, 8.0, (B,)).astype(np.float32),
  }


def diffusers_args(inputs: dict, config) -> dict:
  """The same inputs in diffusers' layout, as torch tensors."""
  import torch  # pylint: disable=g-import-not-at-top
  m = config.model
  L = config.scene.max_text_len
  lat = np.transpose(inputs["latents"][:, 0], (0, 4, 1, 2, 3))  # B C F H W
  mask = np.arange(L)[None] < inputs["text_len"][:, 1:2]
  args = {
      "hidden_states": torch.from_numpy(np.ascontiguousarray(lat)),
      # t * scale in float32, exactly what the Flax sinusoid sees.
      "timestep": torch.from_numpy(
          (inputs["t"][:, 0] * np.float32(m.timestep_scale)).astype(
              np.float32)),
      "encoder_hidden_states": torch.from_numpy(inputs["text"][:, 1]),
      "encoder_attention_mask": torch.from_numpy(mask.astype(np.int64)),
      "pooled_projections": torch.from_numpy(inputs["pooled"][:, 1]),
  }
  if m.guidance_embeds:
    args["guidance"] = torch.from_numpy(
        (inputs["guidance"] * np.float32(m.timestep_scale)).astype(np.float32))
  return args


def diffusers_forward(model, inputs: dict, config) -> np.ndarray:
  """diffusers output in the Flax layout [B, 1, F, H, W, C]."""
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    out = model(**diffusers_args(inputs, config), return_dict=False)[0]
  return np.transpose(out.numpy(), (0, 2, 3, 4, 1))[:, None]


def flax_model(config, params: dict):
  """An MMDiT holding `params` (a pure dict)."""
  model = nnx.eval_shape(lambda: MMDiT(config, rngs=nnx.Rngs(0)))
  state = nnx.state(model, nnx.Param)
  nnx.replace_by_pure_dict(state, jax.tree.map(jax.numpy.asarray, params))
  nnx.update(model, state)
  return model


def flax_forward_fn(config, params: dict):
  """A jitted f(inputs) -> [B, 1, F, H, W, C] for the Flax model."""
  graphdef, state = nnx.split(flax_model(config, params))
  guided = config.model.guidance_embeds

  @jax.jit
  def fwd(state, x):
    model = nnx.merge(graphdef, state)
    return model(x["latents"], x["t"], x["text"], x["text_len"],
                 x["num_frames"], x["pooled"],
                 x["guidance"] if guided else None)

  return lambda inputs: fwd(state, inputs)
