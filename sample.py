r"""Samples a scene from a trained LCT model: joint, causal or bidirectional AR.

  python sample.py --workdir runs/demo --scene scenes/example.json \
      --mode joint --out out/
  python sample.py --workdir runs/demo_causal --scene scenes/example.json \
      --mode causal --out out/causal --t_c 300 --guidance 2

Modes (docs/design.md section 9; `lct_jax/sampling/`):
  joint             every shot at once; shots with a `condition` are fixed
                    (bidirectional model);
  causal            shot after shot against a KV cache of the history
                    (context-causal model: `configs/demo.py:causal`);
  bidirectional_ar  shot after shot, the history re-run as conditions at
                    every step (no cache).
The scene file format is documented in scenes/README.md. Settings come from
flags, else the scene file, else the run's config (`sample.*`). Writes, under
--out: shot_NN.{mp4,gif,png,npy}, scene.{mp4,gif}, scene_contact.png and
settings.json (with consistency scores for the synthetic demo model).

A latent-space model (e.g. a converted HunyuanVideo) writes its latents
(.npy) and, with a VAE (--vae DIR, or the run's `sample.vae`), decodes every
shot to video for the MP4/GIF/contact sheets; with --text_encoders DIR (a
HunyuanVideo pipeline folder) its prompts are encoded by the real text
encoders instead of needing precomputed embedding files:

  python sample.py --workdir runs/hv_lct --scene my_scene.json \
      --vae /models/HunyuanVideo --text_encoders /models/HunyuanVideo
"""
import sys
import time

from absl import app, flags, logging
from tqdm import tqdm

from lct_jax.attention.context import check_mesh
from lct_jax.convert.vae import load_vae
from lct_jax.data import hunyuan_text   # torch, transformers: on first use
from lct_jax.parallel import make_mesh, parse_mesh
from lct_jax.sampling import decode, euler, load, outputs, scene_file
from lct_jax.sampling.sampler import Sampler
from lct_jax.training.checkpoint import CheckpointError

_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "A train.py work "
                               "directory (config.json + checkpoints/).")
_SCENE = flags.DEFINE_string("scene", "scenes/example.json", "Scene file.")
_MODE = flags.DEFINE_enum("mode", "joint",
                          ["joint", "causal", "bidirectional_ar"],
                          "Sampling mode.")
_OUT = flags.DEFINE_string("out", "out", "Output directory.")
_STEPS = flags.DEFINE_integer("steps", None, "Euler steps per shot.")
_GUIDANCE = flags.DEFINE_float("guidance", None, "Text CFG scale (1 = off).")
_EMBEDDED_GUIDANCE = flags.DEFINE_float(
    "embedded_guidance", None, "The guidance value of models with an "
    "embedded (distilled) guidance, e.g. HunyuanVideo; default "
    "sample.embedded_guidance.")
_SHIFT = flags.DEFINE_float("shift", None, "Time-grid shift.")
_ETA = flags.DEFINE_float("eta", None, "Sampler noise: 0 = Euler ODE, 1 = "
                          "DDPM's posterior noise (default: sample.eta).")
_T_C = flags.DEFINE_float("t_c", None, "History timestep, 0-1000 scale.")
_SEED = flags.DEFINE_integer("seed", None, "Scene seed (shots without their "
                             "own seed use seed * 1000 + index).")
_EMA = flags.DEFINE_bool("ema", None, "Use the EMA weights (default: the "
                         "config's sample.use_ema).")
_FPS = flags.DEFINE_integer("fps", 4, "Frames per second of the videos.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")
_VAE = flags.DEFINE_string(
    "vae", None, "Decode latents to video with this VAE (a diffusers folder, "
    "a pipeline folder or a converted checkpoint); default: sample.vae.")
_TEXT_ENCODERS = flags.DEFINE_string(
    "text_encoders", None, "Encode prompts with HunyuanVideo's text encoders "
    "from this pipeline folder (embeddings-mode models).")
_MESH = flags.DEFINE_string(
    "mesh", "", "Devices to sample on, as AXIS=SIZE pairs over data, fsdp, "
    "context, tensor (e.g. 'context=4,tensor=2'; unnamed axes 1, one axis "
    "may be -1 = the rest). Empty: one device. Parameters are sharded as in "
    "training; the scene's tokens and the KV cache over 'context' with the "
    "run's model.context_strategy.")


def fail(message: str):
  sys.exit(f"error: {message}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)

  if _T_C.value is not None and not 0 <= _T_C.value <= 1000:
    fail(f"--t_c={_T_C.value} must be in [0, 1000] (the paper's scale)")
  try:
    config = load.load_config(_WORKDIR.value)
  except (CheckpointError, ValueError) as e:
    fail(str(e))
  mode, N = _MODE.value, config.scene.max_shots
  vae_path = _VAE.value or config.sample.vae
  decoder = None
  if vae_path:
    try:
      decoder = decode.vae_decoder(load_vae(vae_path), config)
    except (OSError, ValueError) as e:
      fail(f"--vae {vae_path}: {e}")
  text_encoder = None
  if _TEXT_ENCODERS.value:
    if config.model.text_mode != "embeddings":
      fail(f"--text_encoders: model.text_mode={config.model.text_mode!r}; "
           "only embeddings-mode models take encoded prompts")
    try:
      text_encoder = hunyuan_text.HunyuanTextEncoder.from_folder(
          _TEXT_ENCODERS.value)
    except (OSError, ValueError) as e:
      fail(f"--text_encoders {_TEXT_ENCODERS.value}: {e}")
  try:
    scene, file_settings = scene_file.load(_SCENE.value, config, max_shots=N,
                                           text_encoder=text_encoder)
  except scene_file.SceneFileError as e:
    fail(str(e))
  s = config.sample
  pick = lambda flag, key, default: (flag.value if flag.value is not None
                                     else file_settings.get(key, default))
  steps = pick(_STEPS, "steps", s.steps)
  shift = pick(_SHIFT, "shift", s.shift)
  guidance = pick(_GUIDANCE, "guidance", s.cfg_scale)
  eta = _ETA.value if _ETA.value is not None else s.eta
  t_c = (_T_C.value / 1000 if _T_C.value is not None
         else file_settings.get("t_c", s.t_c))
  use_ema = _EMA.value if _EMA.value is not None else s.use_ema
  if _SEED.value is not None:
    for i, shot in enumerate(scene.shots):
      shot.seed = _SEED.value * 1000 + i
  if mode == "causal" and config.model.attention_mask != "context_causal":
    print("warning: --mode causal with a bidirectional model: the cache is "
          "exact only for context-causal models (train with "
          "configs/...:causal); see the paper's Fig. 9", file=sys.stderr)
  mesh = None
  if _MESH.value:
    try:
      mesh = make_mesh(parse_mesh(_MESH.value))
      check_mesh(config, mesh)
    except ValueError as e:
      fail(f"--mesh: {e}")
  try:
    config, graphdef, params, step = load.load_model(
        _WORKDIR.value, use_ema=use_ema, config=config, mesh=mesh)
  except CheckpointError as e:
    fail(str(e))
  sampler = Sampler(config, graphdef, params, steps=steps, shift=shift,
                    cfg_scale=guidance, t_c=t_c, eta=eta, mesh=mesh,
                    guidance=_EMBEDDED_GUIDANCE.value)

  shots = len(scene.shots)
  generated = sum(sh.latents is None for sh in scene.shots)
  # Joint mode denoises all shots together: one Euler pass of `steps`.
  bar = tqdm(total=(1 if mode == "joint" else generated) * steps,
             disable=not _PROGRESS.value, unit="step", file=sys.stderr,
             desc=f"{mode}: {generated} of {shots} shots to generate")
  start = time.perf_counter()
  try:
    with euler.progress_hook(lambda: bar.update(1)):
      if mode == "joint":
        latents = sampler.joint(scene)
      elif mode == "causal":
        latents = sampler.causal(scene)
      else:
        latents = sampler.bidirectional_ar(scene)
  except (ValueError, NotImplementedError) as e:
    fail(str(e))
  bar.close()
  seconds = time.perf_counter() - start
  global_prompt, prompts = scene_file.prompts(_SCENE.value)
  settings = {
      "mode": mode, "workdir": _WORKDIR.value, "checkpoint_step": step,
      "scene_file": _SCENE.value, "weights": "ema" if use_ema else "raw",
      "steps": steps, "shift": shift, "guidance": guidance, "eta": eta,
      "embedded_guidance": (None if sampler.guidance_B is None
                            else float(sampler.guidance_B[0])),
      "t_c_0_1000": t_c * 1000, "attention_mask":
          config.model.attention_mask,
      "shots": [{"prompt": p, "frames": sh.num_frames, "seed": sh.seed,
                 "condition": sh.latents is not None,
                 "t_c_0_1000": sampler.shot_t_c(sh) * 1000,
                 "history": None if sh.history is None else list(sh.history)}
                for p, sh in zip(prompts, scene.shots)],
      "seconds": seconds, "vae": vae_path or None}
  settings = outputs.write_scene(
      _OUT.value, latents, [sh.num_frames for sh in scene.shots], settings,
      config=config, prompts=prompts, global_prompt=global_prompt,
      fps=_FPS.value, decode=decoder)
  line = f"wrote {shots} shots to {_OUT.value} ({seconds:.1f} s)"
  if "consistency" in settings:
    c = settings["consistency"]
    mean = c["consistency_mean"]
    line += (f"; recognised {c['recognised']:.2f}, consistency mean "
             + ("n/a (one shot)" if mean is None else f"{mean:.3f}")
             + f" (chance {c['consistency_mean_chance']:.3f})")
  print(line, flush=True)


if __name__ == "__main__":
  app.run(main)
