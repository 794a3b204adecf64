"""Compile the real train step for a TPU slice, on any machine, and read its
memory: `python train.py --config ... --compile_for=v5p-128`.

Nothing is allocated. The train state, the batch and the RNG key are
ShapeDtypeStructs carrying their shardings on a mesh of the slice's devices
(`parallel.topology`), and the step the training loop runs
(`make_train_step`) is lowered and compiled by the TPU compiler from libtpu.
The compiler's `memory_analysis()` is per device; a step that does not fit
makes it raise RESOURCE_EXHAUSTED with the bytes it needed, which is turned
into a report here, not a traceback.

Per device, the report splits the step's footprint into
  - arguments: parameters, AdamW moments and EMA (the donated train state,
    at their shardings) and this device's share of the batch;
  - outputs: the new train state, which aliases the donated arguments;
  - temp: everything else the step keeps live at its peak (activations and
    their remat checkpoints, gradients, attention workspace);
and gives the model FLOPs of the step (`model.flops`), which the compiler's
cost analysis cannot (it counts a layer scan's body once).
"""
from __future__ import annotations

import dataclasses
import math
import re
import time

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from lct_jax import batch as batch_lib
from lct_jax import configlib
from lct_jax import parallel
from lct_jax.attention.context import check_mesh
from lct_jax.data import sharding as data_sharding
from lct_jax.layout import SceneGeometry
from lct_jax.model import flops as flops_lib
from lct_jax.model import kv_cache
from lct_jax.model import sharding as param_sharding
from lct_jax.parallel import topology
from lct_jax.sampling import causal as causal_lib
from lct_jax.sampling import joint as joint_lib
from lct_jax.training import placement
from lct_jax.training.state import abstract_model
from lct_jax.training.step import make_train_step

GIB = topology.GIB
# Headroom asked of a plan: the compiler's figure leaves nothing for the
# runtime, collectives' buffers or fragmentation.
HEADROOM = 0.10


@dataclasses.dataclass
class Report:
  what: str
  tpu_slice: topology.TpuSlice
  mesh: dict
  batch_size: int
  grad_accum: int
  tokens_per_scene: int
  params: int              # bytes per device (each, at its sharding)
  optimizer: int
  ema: int
  batch: int
  flops: flops_lib.StepFlops | None
  arguments: int | None = None   # from the compiler; None when it refused
  outputs: int | None = None
  aliased: int | None = None
  temp: int | None = None
  needed: int | None = None      # RESOURCE_EXHAUSTED's figure when refused
  compile_s: float = 0.0
  note: str = ""           # why it was not compiled, if it was not
  compiled: object = dataclasses.field(default=None, repr=False)

  @property
  def total(self) -> int:
    if self.temp is None:
      return self.needed
    return self.arguments + self.outputs - self.aliased + self.temp

  @property
  def fits(self) -> bool:
    return self.temp is not None and self.total <= self.tpu_slice.hbm_bytes

  @property
  def headroom(self) -> float:
    return 1.0 - self.total / self.tpu_slice.hbm_bytes

  def table(self) -> str:
    hbm = self.tpu_slice.hbm_bytes
    g = lambda b: "-" if b is None else f"{b / GIB:9.3f}"
    pct = lambda b: "" if b is None else f"{100 * b / hbm:6.1f}%"
    mesh = ", ".join(f"{k}={v}" for k, v in self.mesh.items())
    rows = [
        f"{self.what} compiled for {self.tpu_slice.describe()}",
        f"mesh ({mesh}); batch {self.batch_size} scenes of "
        f"{self.tokens_per_scene:,} tokens, grad_accum {self.grad_accum}; "
        f"compile {self.compile_s:.0f} s",
        f"{'per device':<34}{'GiB':>9}{'of HBM':>8}",
        *(f"{label:<34}{g(b)}{pct(b)}" for label, b in (
            ("  parameters (float32)", self.params),
            ("  optimizer moments", self.optimizer), ("  EMA", self.ema),
            ("  batch share", self.batch),
            ("arguments (all of the above)", self.arguments),
            ("outputs", self.outputs),
            ("  of which in donated arguments", self.aliased),
            ("temp (activations, grads, work)", self.temp),
            ("total = args + out - alias + temp", self.total))),
        f"{'HBM per device':<34}{g(hbm)}",
    ]
    if self.flops is not None:
      f = self.flops
      per_dev = f.train_step / self.tpu_slice.num_devices
      rows.append(f"model FLOPs per step: {f.train_step:.3e} "
                  f"({f.attention / f.forward_per_scene:.0%} attention), "
                  f"{per_dev:.3e} per device")
      peak = self.tpu_slice.generation.peak_bf16_flops
      if peak:
        rows.append(f"step time at 100% / 50% MFU: {per_dev / peak:.2f} s / "
                    f"{2 * per_dev / peak:.2f} s")
    if self.note:
      rows.append(f"DOES NOT FIT: {self.note}")
    elif self.temp is None:
      rows.append(f"DOES NOT FIT: the compiler needs {g(self.needed).strip()}"
                  f" GiB per device, the chip has {hbm / GIB:.2f} GiB")
    elif not self.fits:
      rows.append(f"DOES NOT FIT: {self.total / GIB:.2f} GiB > "
                  f"{hbm / GIB:.2f} GiB")
    else:
      rows.append(f"fits, {self.headroom:.0%} headroom "
                  f"({'ok' if self.headroom >= HEADROOM else 'under'} the "
                  f"{HEADROOM:.0%} asked of a plan)")
    return "\n".join(rows)


def _bytes_per_device(tree) -> int:
  """Bytes one device holds of ShapeDtypeStructs with shardings (the most
  any device holds: shards of an uneven split are padded to equal size)."""
  total = 0
  for x in jax.tree.leaves(tree):
    shard = x.sharding.shard_shape(x.shape)
    total += math.prod(shard) * np.dtype(x.dtype).itemsize
  return total


_EXHAUSTED = re.compile(r"([\d.]+)([KMGT])\) exceeds available HBM")
_UNITS = dict(K=1024, M=1024 ** 2, G=1024 ** 3, T=1024 ** 4)


def _needed_bytes(message: str) -> int | None:
  m = _EXHAUSTED.search(message)
  return None if m is None else int(float(m.group(1)) * _UNITS[m.group(2)])


def _mesh_on(config, tpu_slice, devices):
  try:
    mesh = parallel.make_mesh(config.mesh, devices)
  except ValueError as e:
    raise ValueError(f"--compile_for={tpu_slice.name}: {e} (the slice has "
                     f"{tpu_slice.num_devices} devices); set --config.mesh."
                     "* so that the axes multiply to it") from None
  check_mesh(config, mesh)
  return mesh


def compile_train_step(config, slice_name: str) -> Report:
  """Compiles the config's train step for `slice_name`; never raises for a
  step that does not fit (the report says so), only for bad input."""
  configlib.validate(config)
  tpu_slice = topology.parse_slice(slice_name)
  devices = topology.slice_devices(tpu_slice)
  mesh = _mesh_on(config, tpu_slice, devices)
  B = config.train.batch_size
  shards = data_sharding.batch_shards(mesh)
  micro = B // max(config.train.grad_accum, 1)
  if B % config.train.grad_accum or micro % shards:
    raise ValueError(
        f"train.batch_size={B} with train.grad_accum="
        f"{config.train.grad_accum} gives microbatches of {micro} scenes, "
        f"which the mesh's batch axes (data x fsdp = {shards}) do not "
        "divide")

  graphdef, abstract_params = abstract_model(config)
  abstract = placement.abstract_state(config)
  state = placement.with_shape_dtype_shardings(
      abstract, placement.state_shardings(config, mesh, abstract))
  batch = batch_lib.abstract_batch(config, B,
                                   data_sharding.batch_sharding(mesh))
  key = jax.eval_shape(lambda: jax.random.key(0))
  rng = jax.ShapeDtypeStruct(key.shape, key.dtype,
                             sharding=NamedSharding(mesh, P()))
  geom = SceneGeometry.from_config(config)
  report = Report(
      what=f"train step ({config.train.stage}, {config.scene.max_shots} "
      f"shots, {config.model.attention_mask}, attention "
      f"{config.model.attention_impl}/{config.model.context_strategy}, "
      f"remat {config.model.remat_policy})",
      tpu_slice=tpu_slice, mesh=dict(mesh.shape), batch_size=B,
      grad_accum=config.train.grad_accum, tokens_per_scene=geom.seq_len,
      params=_bytes_per_device(state.params),
      optimizer=_bytes_per_device(state.opt_state),
      ema=_bytes_per_device(state.ema_params),
      batch=_bytes_per_device(batch),
      flops=flops_lib.step_flops(config, abstract_params))

  resident = report.params + report.optimizer + report.ema + report.batch
  if resident > tpu_slice.hbm_bytes:
    # Not worth a compile: the arguments alone do not fit.
    report.needed = resident
    report.note = (f"the train state and batch alone take "
                   f"{resident / GIB:.2f} GiB per device, the chip has "
                   f"{tpu_slice.hbm_bytes / GIB:.2f} GiB (mesh "
                   f"{dict(mesh.shape)}); shard them over more devices "
                   "(mesh.fsdp)")
    return report
  step = make_train_step(graphdef, config)
  return _compile(report, mesh, lambda: step.lower(state, batch, rng).compile()
                  )


def _compile(report: Report, mesh, compile_fn):
  """Runs `compile_fn` under the mesh and fills the report's memory (or its
  `needed` bytes when the compiler refuses for want of HBM)."""
  t0 = time.perf_counter()
  with jax.set_mesh(mesh):
    try:
      compiled = compile_fn()
    except Exception as e:  # pylint: disable=broad-except
      needed = _needed_bytes(str(e))
      if "RESOURCE_EXHAUSTED" not in str(e) or needed is None:
        raise
      report.needed = needed
      report.compile_s = time.perf_counter() - t0
      return report
  report.compile_s = time.perf_counter() - t0
  report.compiled = compiled
  mem = compiled.memory_analysis()
  report.arguments = mem.argument_size_in_bytes
  report.outputs = mem.output_size_in_bytes
  report.aliased = mem.alias_size_in_bytes
  report.temp = mem.temp_size_in_bytes
  return report


# --- the samplers ------------------------------------------------------------
def _sds(mesh, shape, dtype, spec=P()):
  return jax.ShapeDtypeStruct(tuple(shape), dtype,
                              sharding=NamedSharding(mesh, spec))


def _sampler_params(config, mesh):
  """(graphdef, params) as the Sampler holds them: at their training
  shardings on the mesh."""
  graphdef, params = abstract_model(config)
  return graphdef, placement.with_shape_dtype_shardings(
      params, param_sharding.param_shardings(config, params, mesh))


def _sampler_report(what, config, tpu_slice, mesh, params,
                    inputs=()) -> Report:
  return Report(
      what=what, tpu_slice=tpu_slice, mesh=dict(mesh.shape), batch_size=1,
      grad_accum=1,
      tokens_per_scene=SceneGeometry.from_config(config).seq_len,
      params=_bytes_per_device(params), optimizer=0, ema=0,
      batch=_bytes_per_device(inputs), flops=None)


SAMPLERS = ("joint", "causal")


def compile_samplers(config, slice_name: str, kinds=SAMPLERS):
  """[report] for the joint sampler (a whole scene,
  `sample.steps` Euler steps) and one cached causal shot (Euler steps of a
  new shot against a full KV cache of `max_shots - 1` history slots)."""
  configlib.validate(config)
  tpu_slice = topology.parse_slice(slice_name)
  mesh = _mesh_on(config, tpu_slice, topology.slice_devices(tpu_slice))
  graphdef, params = _sampler_params(config, mesh)
  geom = SceneGeometry.from_config(config)
  m, sa = config.model, config.sample
  N, shot = geom.max_shots, (geom.frames, geom.height, geom.width,
                             geom.channels)
  use_cfg = sa.cfg_scale != 1.0
  f32 = np.float32
  steps = _sds(mesh, (sa.steps + 1,), f32)
  scale = _sds(mesh, (), f32)
  guidance = _sds(mesh, (1,), f32) if m.guidance_embeds else None
  out = []

  batch = batch_lib.abstract_batch(config, 1, NamedSharding(mesh, P()))
  joint_args = (params, batch, _sds(mesh, (1, N), bool),
                _sds(mesh, (1, N), f32), _sds(mesh, (1, N) + shot, f32),
                _sds(mesh, (1, N) + shot, f32), steps, scale, guidance)
  fn = joint_lib.jitted(graphdef)
  if "joint" in kinds:
    out.append(_compile(_sampler_report(
        f"joint sampler ({N} shots, {sa.steps} Euler steps, cfg "
        f"{'on' if use_cfg else 'off'})", config, tpu_slice, mesh, params),
        mesh, lambda: fn.lower(*joint_args, use_cfg=use_cfg).compile()))
  if "causal" not in kinds:
    return out

  if m.attention_mask != "context_causal":
    # The cache needs the causal mask; compile what this config's causal
    # stage (same shapes and parameters) runs.
    causal_config = ml_collections.ConfigDict(config.to_dict())
    causal_config.model.attention_mask = "context_causal"
    graphdef, params = _sampler_params(causal_config, mesh)
  capacity = kv_cache.default_capacity(geom)
  text = batch["text"]
  text_1 = _sds(mesh, (1,) + text.shape[2:], text.dtype)
  len_1 = _sds(mesh, (1,), np.int32)
  pooled_1 = (_sds(mesh, (1, m.pooled_dim), f32) if "pooled" in batch
              else None)
  init_fn, denoise_fn, _ = causal_lib.jitted(graphdef)
  with jax.set_mesh(mesh):
    cache = jax.eval_shape(
        lambda p, *a: init_fn(p, *a, capacity=capacity, use_cfg=use_cfg,
                              guidance_B=guidance),
        params, text_1, len_1, pooled_1)
  # The cache as the sampler lays it out (`kv_cache.KV_AXES`).
  kv_spec = parallel.logical_to_spec(kv_cache.KV_AXES)
  cache = jax.tree.map(lambda x: _sds(
      mesh, x.shape, x.dtype, param_sharding.fit_spec(kv_spec, x.shape, mesh)
      if x.ndim == 6 else P()), cache)
  causal_args = (params, cache, _sds(mesh, (1, capacity), bool), text_1,
                 len_1, pooled_1, len_1, _sds(mesh, (1,) + shot, f32), steps,
                 scale)
  report = _sampler_report(
      f"causal cached shot ({capacity} history slots, {sa.steps} Euler "
      f"steps, cfg {'on' if use_cfg else 'off'})", config, tpu_slice, mesh,
      params, cache)
  out.append(_compile(report, mesh, lambda: denoise_fn.lower(
      *causal_args, use_cfg=use_cfg, guidance_B=guidance).compile()))
  return out
