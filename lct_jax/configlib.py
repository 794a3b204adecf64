"""The config schema: every field, its default, and what it means.

Config files in `configs/` start from `base_config()` and override what their
run needs, so a field exists (and is documented) in exactly one place. The
dict is locked: a typo on the command line is an error, not a silent no-op.
"""
from __future__ import annotations

import importlib.util

import ml_collections

from lct_jax.attention import context, dispatch, mask
from lct_jax.data import buckets, pipeline
from lct_jax.layout import SceneGeometry, rope
from lct_jax.model import mmdit, prediction, remat

# Option lists of fields that training implements (a layer above this one,
# which reads them from here); the others come from their implementations.
DECAYS = ("cosine", "linear", "constant")
OPTIMIZERS = ("adamw", "muon")
ON_NONFINITE = ("skip", "stop")
# Fields since removed from the schema, with the value under which they
# changed nothing (ANY: none mattered). A saved run that held that value
# loads and resumes as before; one that held another is refused.
ANY = object()
REMOVED = {"model.pooled_text_with_global": False,
           "model.prediction_sigma_data": ANY}   # only read by data_skip


def removed_noop(name: str, value) -> bool:
  """Whether `name`, a field no longer in the schema, held its no-op value."""
  return name in REMOVED and (REMOVED[name] is ANY or REMOVED[name] == value)


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  # --- model: the MMDiT (docs/design.md 5) ----------------------------------
  m = c.model = ml_collections.ConfigDict()
  m.width = 128                   # = num_heads * head_dim
  m.num_heads = 4
  m.head_dim = 32
  m.depth = 2                     # dual-stream blocks (scanned)
  m.num_single_layers = 0         # single-stream blocks after the dual ones
                                  # (HunyuanVideo: 40); scanned too
  m.num_refiner_layers = 0        # HunyuanVideo text token refiner blocks
                                  # after proj_in, per group at its own t_g
                                  # (HunyuanVideo: 2); 0 = no refiner
  m.mlp_ratio = 4.0
  m.in_channels = 4               # latent channels
  m.out_channels = 0              # 0: same as in_channels
  m.patch_t = 1                   # 3D patch (patch_t, patch, patch)
  m.patch = 2
  m.rope_axes_dim = (8, 12, 12)   # (t, h, w) bands; must sum to head_dim
  m.rope_theta = 256.0
  m.text_rope = True              # False: legacy single-shot layout
  m.text_mode = "tokens"          # tokens: learned vocab; embeddings: given
  m.vocab_size = 256              # tokens mode
  m.text_embed_dim = 64           # width of token embeddings / given embeds
  m.use_pooled_text = True        # add pooled text of the group to c_g
  m.pooled_dim = 0                # embeddings mode: pooled vector width
  m.guidance_embeds = False       # distilled-guidance embed (HunyuanVideo)
  m.timestep_scale = 1000.0       # t in [0,1] -> sinusoid of t * scale
  m.global_timestep = 0.0         # t of the global prompt group (clean)
  m.prediction = "velocity"      # what the last layer predicts: velocity
                                  # (eps - z_0) | data (clean z_0, turned
                                  # into velocity; pixel-space models)
  m.prediction_t_min = 0.05       # data: v = (z_t - x) / max(t, this)
  m.zero_init = True              # adaLN-Zero: gates and output start at 0
  m.attention_mask = "bidirectional"   # or context_causal (causal stage)
  m.attention_impl = "auto"       # auto (cudnn on GPU, splash on TPU, else
                                  # blockwise) | dense | blockwise | cudnn |
                                  # splash
  m.block_q = 512
  m.block_kv = 512
  # How attention runs when mesh.context > 1 (lct_jax/attention/context.py):
  # ring (K/V passed around the context devices, memory 1/n), all_gather
  # (K/V gathered: simplest, whole-sequence K/V per device) or ulysses
  # (all_to_all sequence <-> heads; heads per tensor shard % context == 0).
  m.context_strategy = "ring"
  m.remat_policy = "full"         # none | full | dots | dots_no_batch
  m.compute_dtype = "float32"     # params stay float32; activations in this

  # --- scene: static shapes of a batch (docs/design.md 2) --------------------
  s = c.scene = ml_collections.ConfigDict()
  s.max_shots = 4                 # shot slots per scene (paper: up to 9)
  s.max_text_len = 16             # text slots per group
  s.frames = 4                    # latent frames per shot slot
  s.height = 8                    # latent grid
  s.width = 8
  s.global_dummy_tokens = False   # global dummy block: positional only

  # --- flow: rectified-flow objective (docs/design.md 8) -------------------
  f = c.flow = ml_collections.ConfigDict()
  f.t_mean = 0.0                  # logit-normal timesteps, SD3 defaults
  f.t_std = 1.0
  f.shift = 1.0                   # SD3 shift; 1 = none
  f.t_low_fraction = 0.0          # shots whose logit-normal is centred on
  f.t_low_mean = 0.0              # t_low_mean instead (a mixture; flow.py)
  f.p_frame = 0.1                 # replace a shot by one of its frames
  f.p_text = 0.1                  # drop all text of a scene (CFG)
  f.p_single = 0.0                # reduce a scene to one of its shots

  # --- optim ---------------------------------------------------------------
  o = c.optim = ml_collections.ConfigDict()
  o.name = "adamw"                # adamw | muon (Muon on the transformer
                                  # blocks' matrices, AdamW on the rest;
                                  # training/optim.py)
  o.lr = 1e-4
  o.warmup_steps = 100
  o.decay = "cosine"              # cosine | linear | constant after warmup
  o.end_lr_factor = 0.1           # final lr = lr * end_lr_factor
  o.b1 = 0.9
  o.b2 = 0.999
  o.eps = 1e-8
  o.muon_beta = 0.95              # Muon's momentum (muon only)
  o.weight_decay = 0.0            # not applied to biases and norm weights
  o.clip_norm = 1.0               # global-norm clipping; 0 = off
  o.ema_decay = 0.999             # EMA of parameters, warmed up as
                                  # (1 + n) / (10 + n) at update n
                                  # (training/step.py); 0 = the params

  # --- train ---------------------------------------------------------------
  t = c.train = ml_collections.ConfigDict()
  t.batch_size = 2                # global batch (scenes per step)
  t.grad_accum = 1                # microbatches per step
  t.steps = 1000
  t.stage = "lct"                 # text_rope | lct | causal (for the record)
  t.init_from = ""                # start params from this checkpoint (a
                                  # workdir, checkpoints dir, step dir, or a
                                  # converted params checkpoint); new
                                  # optimizer state. Ignored when the workdir
                                  # already has a checkpoint (that resumes)
  t.log_every = 25                # steps between log lines / TB scalars
  t.checkpoint_every = 200        # steps between checkpoints (and at the end)
  t.keep_checkpoints = 3          # newest checkpoints kept; 0 = keep all
  t.async_checkpoints = True      # write checkpoints in the background
  t.on_nonfinite = "skip"         # a NaN/Inf loss or gradient: the update is
                                  # skipped either way; skip: count and go
                                  # on; stop: raise (nothing bad is saved)
  t.max_skipped = 100             # skip mode: this many skipped steps stop
                                  # the run (something is broken)
  t.distributed = False           # jax.distributed.initialize() first
                                  # (multi-host; coordinator from the env)
  t.sample_every = 0              # write sample videos of a fixed validation
                                  # scene to <workdir>/samples/<step>/ every
                                  # this many steps and at the end; 0 = off

  # --- sample: sampling defaults (docs/design.md 9) --------------------------
  # sample.py and train.py's samples; a scene file or flags override them.
  sa = c.sample = ml_collections.ConfigDict()
  sa.steps = 20                   # Euler steps per shot (t from 1 to 0)
  sa.shift = 1.0                  # time-grid shift (SD3); 1 = uniform grid
  sa.cfg_scale = 1.0              # text CFG scale; 1 = no guidance pass
  sa.eta = 0.0                    # 0: Euler ODE; (0, 1]: stochastic, 1 =
                                  # DDPM's posterior noise (euler.py)
  sa.t_c = 0.3                    # history timestep in [0, 1] for causal /
                                  # auto-regressive modes (paper: 100-500 of
                                  # 1000); given conditions default to 0
  sa.use_ema = True               # sample with the EMA weights, else raw
  sa.embedded_guidance = 6.0      # models with model.guidance_embeds
                                  # (HunyuanVideo's distilled guidance; its
                                  # pipeline's default guidance_scale)
  sa.vae = ""                     # latent models: a VAE (diffusers folder or
                                  # `convert vae import` checkpoint) that
                                  # sample.py decodes shots to video with;
                                  # "" = write latents only (--vae overrides)

  # --- data: the grain input pipeline (docs/design.md 10) ------------------
  d = c.data = ml_collections.ConfigDict()
  d.source = "synthetic"          # synthetic: drawn on the fly, no files;
                                  # tfds_synthetic: the same scenes written
                                  # once as a TFDS array_record dataset under
                                  # data.dir; scene_folder: a dataset built by
                                  # `python data/build.py folder` in data.dir
  d.dir = "data/tfds"             # TFDS data directory (tfds_* / scene_folder)
  d.split = "train"               # split to read (tfds_synthetic/scene_folder)
  d.num_validation_scenes = 16    # tfds_synthetic: validation split size
  d.folder_kind = "pixels"        # scene_folder: pixels | latents
  d.num_scenes = 1000             # synthetic: scenes in the pool (one epoch)
  d.synthetic_seed = 0            # synthetic: scene i = generate_scene(seed+i)
  d.synthetic_max_shots = 0       # synthetic: shots per scene; 0 = max_shots
  d.synthetic_max_frames = 0      # synthetic: frames per shot; 0 = frames
  d.seed = 0                      # shuffle order and shot/frame windows
  d.shuffle = True                # reshuffle the scenes every epoch
  d.num_epochs = 0                # 0 = repeat forever
  d.workers = 0                   # grain worker processes; 0 = in-process
  d.read_threads = 2              # threads per process reading + transforming
  d.prefetch = 8                  # examples buffered per process (and worker)
  d.skip_bad_records = False      # False: a bad record raises naming it
  d.p_frame = 0.0                 # pipeline frame substitution (pixels,
                                  # before any VAE); use this or flow.p_frame
  d.buckets = ()                  # aspect-ratio buckets: latent grids (h, w)
                                  # within 10% of scene.height*scene.width,
                                  # e.g. ((8, 8), (6, 10), (10, 6)); () = off:
                                  # every scene must have the config grid

  # --- mesh: ('data', 'fsdp', 'context', 'tensor'); -1 = all remaining ------
  me = c.mesh = ml_collections.ConfigDict()
  me.data = -1
  me.fsdp = 1
  me.context = 1
  me.tensor = 1
  return c


# Numeric fields and the range each must lie in, checked by `validate`.
_RULES = {">= 1": lambda x: x >= 1, ">= 0": lambda x: x >= 0,
          "> 0": lambda x: x > 0, "in [0, 1]": lambda x: 0 <= x <= 1,
          "in (0, 1]": lambda x: 0 < x <= 1}
_RANGES = {
    ">= 1": ("model.depth", "scene.max_shots", "train.log_every",
             "train.checkpoint_every", "train.steps", "sample.steps",
             "data.num_scenes", "data.prefetch"),
    ">= 0": ("model.num_single_layers", "model.num_refiner_layers",
             "train.keep_checkpoints", "train.sample_every",
             "sample.cfg_scale", "data.workers", "data.read_threads",
             "data.num_epochs", "data.synthetic_max_shots",
             "data.synthetic_max_frames"),
    "> 0": ("sample.shift",),
    "in [0, 1]": ("flow.p_frame", "flow.p_text", "flow.p_single",
                  "flow.t_low_fraction", "sample.eta",
                  "data.p_frame"),
    "in (0, 1]": ("model.prediction_t_min",),
}


def validate(c: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the offending field. Cheap; call before jit."""
  m = c.model

  def choice(name, value, options):
    if value not in options:
      raise ValueError(f"{name}={value!r} is not one of {options}")

  if m.width != m.num_heads * m.head_dim:
    raise ValueError(f"model.width={m.width} must equal model.num_heads * "
                     f"model.head_dim = {m.num_heads} * {m.head_dim}")
  try:
    rope.validate_axes(tuple(m.rope_axes_dim), m.head_dim)
  except ValueError as e:
    raise ValueError(f"model.{e}") from None
  choice("model.attention_mask", m.attention_mask, tuple(mask.MODES))
  choice("model.remat_policy", m.remat_policy, remat.NAMES)
  choice("model.context_strategy", m.context_strategy, context.STRATEGIES)
  choice("model.attention_impl", m.attention_impl, dispatch.IMPLS)
  choice("model.text_mode", m.text_mode, mmdit.TEXT_MODES)
  choice("model.prediction", m.prediction, prediction.PREDICTIONS)
  choice("model.compute_dtype", m.compute_dtype, mmdit.COMPUTE_DTYPES)
  choice("optim.decay", c.optim.decay, DECAYS)
  choice("optim.name", c.optim.name, OPTIMIZERS)
  choice("train.on_nonfinite", c.train.on_nonfinite, ON_NONFINITE)
  choice("data.source", c.data.source, pipeline.DATA_SOURCES)
  for rule, names in _RANGES.items():
    for name in names:
      section, field = name.split(".")
      if not _RULES[rule](c[section][field]):
        raise ValueError(f"{name}={c[section][field]} must be {rule}")
  if m.text_mode == "embeddings" and m.use_pooled_text and m.pooled_dim < 1:
    raise ValueError("model.pooled_dim must be set (> 0) when "
                     "model.text_mode='embeddings' and model.use_pooled_text")
  if c.train.batch_size % c.train.grad_accum:
    raise ValueError(f"train.batch_size={c.train.batch_size} is not divisible "
                     f"by train.grad_accum={c.train.grad_accum}")
  if not 0.0 <= c.sample.t_c <= 1.0:
    raise ValueError(f"sample.t_c={c.sample.t_c} must be in [0, 1] (internal "
                     "scale; 0-1000 only on command lines and scene files)")
  if c.data.p_frame > 0 and c.flow.p_frame > 0:
    raise ValueError(f"data.p_frame={c.data.p_frame} and flow.p_frame="
                     f"{c.flow.p_frame} would substitute frames twice; set "
                     "one of them to 0")
  buckets.validate_buckets(c)
  # Geometry checks (grid divisible by the patch size, positive sizes).
  SceneGeometry.from_config(c)


def with_grid(c: ml_collections.ConfigDict, height: int, width: int
              ) -> ml_collections.ConfigDict:
  """A copy of the config whose scene grid is (height, width): a bucket's."""
  out = ml_collections.ConfigDict(c.to_dict())
  out.scene.height, out.scene.width = int(height), int(width)
  return out


def load(spec: str) -> ml_collections.ConfigDict:
  """'configs/demo.py' or 'configs/lct_3b.py:causal' -> its get_config(...).

  The same `path[:arg]` form as `--config` on the command line, for code
  that needs a config without absl flags (benchmarks, tests, notebooks).
  """
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("lct_config", path)
  if module_spec is None:
    raise FileNotFoundError(f"config file {path!r} not found")
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()
