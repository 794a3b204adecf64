"""train.py's sample videos: a fixed validation scene every
`train.sample_every` steps and at the end, under <workdir>/samples/<step>/.

The scene is drawn once from the synthetic generator (fixed seed, so every
checkpoint of a run samples the same prompts and noise): joint generation
for a bidirectional model, causal generation with the KV cache for a
context-causal one, with the `sample.*` settings and EMA weights by default.
It runs on the training mesh with the state's sharded weights as they are
(no gather to one device), in every process; process 0 writes the files.
"""
from __future__ import annotations

import os

import jax

from lct_jax.data import synthetic
from lct_jax.sampling import outputs
from lct_jax.sampling.sampler import Sampler, Scene, Shot
from lct_jax.sampling.scene_file import TextEncoder

VALIDATION_SEED = 123_456


def validation_scene(config) -> tuple[Scene, str, list[str]]:
  s = config.scene
  drawn = synthetic.generate_scene(VALIDATION_SEED, max_shots=s.max_shots,
                                   max_frames=s.frames)
  encode = TextEncoder(config)
  g_text, g_len, g_pooled = encode(drawn.global_prompt, "global", "<val>")
  shots, prompts = [], []
  for i, shot in enumerate(drawn.shots):
    text, n, pooled = encode(shot.prompt, f"shots[{i}]", "<val>")
    shots.append(Shot(text, n, min(len(shot.frames), s.frames),
                      pooled=pooled, seed=VALIDATION_SEED + i))
    prompts.append(shot.prompt)
  return Scene(g_text, g_len, shots, g_pooled), drawn.global_prompt, prompts


def write_samples(config, graphdef, state, workdir: str, step: int,
                  mesh=None) -> str:
  """Samples the validation scene with `state`'s weights (placed on `mesh`,
  None: one device); -> the folder. Call from every process."""
  params = state.ema_params if config.sample.use_ema else state.params
  s = config.sample
  sampler = Sampler(config, graphdef, params, steps=s.steps, shift=s.shift,
                    cfg_scale=s.cfg_scale, t_c=s.t_c, eta=s.eta, mesh=mesh)
  scene, global_prompt, prompts = validation_scene(config)
  causal = config.model.attention_mask == "context_causal"
  latents = sampler.causal(scene) if causal else sampler.joint(scene)
  out = os.path.join(workdir, "samples", str(step))
  if jax.process_index() != 0:
    return out
  outputs.write_scene(
      out, latents, [sh.num_frames for sh in scene.shots],
      {"step": step, "mode": "causal" if causal else "joint",
       "steps": s.steps, "guidance": s.cfg_scale, "t_c_0_1000": s.t_c * 1000,
       "weights": "ema" if s.use_ema else "raw", "prompts": prompts},
      config=config, prompts=prompts, global_prompt=global_prompt)
  return out
