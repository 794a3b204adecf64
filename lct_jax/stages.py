"""The three training stages of LCT, as edits of a config (docs/design.md section 10).

  text_rope  single-shot fine-tune that gives the pre-trained model's text
             tokens 1D-equivalent 3D RoPE and puts video after the text on
             the space diagonal [paper]. Starts from converted weights.
  lct        scene-level training: up to max_shots shots, bidirectional,
             per-shot timesteps, mixed with single-shot examples [paper].
             Starts from the text_rope checkpoint.
  causal     context-causal fine-tune from the LCT weights with a fresh
             optimizer [paper: 9K iterations; 1K already good].
"""
from __future__ import annotations

STAGES = ("text_rope", "lct", "causal")


def apply_stage(config, stage: str, *, max_shots: int):
  """Edits `config` in place for `stage`; returns it."""
  if stage not in STAGES:
    raise ValueError(f"unknown stage {stage!r}; choose one of {STAGES}")
  config.train.stage = stage
  config.model.text_rope = True
  if stage == "text_rope":
    config.scene.max_shots = 1
    config.model.attention_mask = "bidirectional"
    config.flow.p_single = 0.0
  elif stage == "lct":
    config.scene.max_shots = max_shots
    config.model.attention_mask = "bidirectional"
  else:
    config.scene.max_shots = max_shots
    config.model.attention_mask = "context_causal"
  return config
