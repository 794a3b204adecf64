"""Model FLOPs of a training step, counted from the parameter tree.

The compiler cannot give this: `cost_analysis()` counts a scan body once,
not once per layer. Counted here, at the config's static shapes (padded
shots and text included, as the step computes them):
  - every matrix multiply a token passes through, 2 FLOPs per weight: video
    tokens through the video stream's weights, text tokens through the text
    stream's (`add_*`, `to_add_out`, `ff_context`, the context embedder and
    refiner), all tokens through single-stream blocks;
  - attention scores and values, 4 S^2 (heads x head_dim) per layer over the
    whole sequence S (the dense-equivalent, bidirectional cost);
  - a training step as 3x the forward (forward, and a backward of twice its
    cost); remat's recomputation is not counted: these are model FLOPs, the
    numerator of MFU.
Modulation (AdaLN) and timestep / pooled-text embeddings run once per shot
or group, not per token, and are left out (well under 0.1%).
"""
from __future__ import annotations

import dataclasses

import jax

from lct_jax.layout import SceneGeometry

# Parameter-path keys whose weights only text tokens pass through.
_TEXT_KEYS = frozenset({"add_q_proj", "add_k_proj", "add_v_proj",
                        "to_add_out", "ff_context", "context_embedder"})
# Run per shot or group, not per token.
_PER_GROUP_KEYS = frozenset({"norm1", "norm1_context", "norm", "norm_out",
                             "time_text_embed"})


@dataclasses.dataclass(frozen=True)
class StepFlops:
  video_tokens: int
  text_tokens: int
  matmul: float          # per scene, forward
  attention: float       # per scene, forward
  batch_size: int

  @property
  def forward_per_scene(self) -> float:
    return self.matmul + self.attention

  @property
  def train_step(self) -> float:
    return 3.0 * self.forward_per_scene * self.batch_size


def _keys(path) -> list[str]:
  return [str(getattr(k, "key", k)) for k in path]


def step_flops(config, params, batch_size: int | None = None) -> StepFlops:
  """FLOPs of one training step of `batch_size` scenes (default the
  config's); `params` may be ShapeDtypeStructs."""
  geom = SceneGeometry.from_config(config)
  m = config.model
  video, text = geom.video_len, geom.text_len
  seq = video + text
  matmul = 0.0
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    keys = _keys(path)
    if keys[-1] != "kernel" or _PER_GROUP_KEYS.intersection(keys):
      continue
    weights = float(leaf.size)
    if "single_transformer_blocks" in keys:
      tokens = seq
    elif _TEXT_KEYS.intersection(keys) or "token_refiner" in keys:
      tokens = text
    else:
      tokens = video
    matmul += 2.0 * weights * tokens
  layers = m.depth + m.num_single_layers
  attention = 4.0 * seq * seq * m.num_heads * m.head_dim * layers
  return StepFlops(video, text, matmul, attention,
                   config.train.batch_size if batch_size is None
                   else batch_size)
