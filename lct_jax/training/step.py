"""The jitted training step: (state, batch, rng) -> (state, metrics).

Per step:
  1. one key per example, from `rng` (the caller folds in the step number; a
     fixed rng gives fixed noise and timesteps, as the overfit test wants);
  2. augment (single-shot mixing, frame substitution, text dropout);
  3. per-shot logit-normal t, noise, velocity target;
  4. forward in the compute dtype, per-shot MSE as (sum, count);
  5. gradients summed over `grad_accum` microbatches (a scan) and divided
     once by the batch's valid-shot count: equal to one full-batch step;
  6. AdamW update (clipped), EMA; if the loss or the gradient norm is not
     finite, the update is skipped (state unchanged but for `step` and
     `skipped`), so a NaN never reaches the parameters or a checkpoint.
Metrics include the loss per timestep bucket (`loss_t0` .. for t in
[0, 1/K), [1/K, 2/K) ..., K = T_BUCKETS), averaged over the batch's shots.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from lct_jax import batch as batch_lib
from lct_jax import configlib
from lct_jax import parallel
from lct_jax.attention.context import check_mesh
from lct_jax.data import buckets
from lct_jax.diffusion import augment, flow
from lct_jax.model import sharding
from lct_jax.training.optim import optimizer_for
from lct_jax.training.state import TrainState, abstract_model


def cast_floats(tree, dtype):
  return jax.tree.map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating)
      else x, tree)


def prepare(config, batch: dict, keys_B: jax.Array):
  """Augmentations, timesteps, noise -> (model inputs, target, num_frames)."""
  f, m = config.flow, config.model
  k_single, k_frame, k_text, k_t, k_eps = augment.split_each(keys_B, 5)
  if f.p_single > 0:
    batch = augment.to_single_shot(k_single, batch, f.p_single)
  latents, num_frames = batch["latents"], batch["num_frames"]
  if f.p_frame > 0:
    latents, num_frames = augment.substitute_frames(
        k_frame, latents, num_frames, f.p_frame, m.patch_t)
  text, pooled = batch["text"], batch.get("pooled")
  if f.p_text > 0:
    text, pooled = augment.drop_text(k_text, text, batch["text_len"],
                                     f.p_text, pooled)
  N = latents.shape[1]
  t_BxN = jax.vmap(lambda k: flow.sample_timesteps(
      k, (N,), mean=f.t_mean, std=f.t_std, shift=f.shift,
      low_fraction=f.t_low_fraction, low_mean=f.t_low_mean))(k_t)
  eps = jax.vmap(lambda k: jax.random.normal(
      k, latents.shape[1:], jnp.float32))(k_eps).astype(latents.dtype)
  z_t = flow.add_noise(latents, eps, t_BxN)
  inputs = dict(latents=z_t, t_BxN=t_BxN, text=text,
                text_len=batch["text_len"], num_frames=num_frames,
                pooled=pooled)
  return inputs, flow.velocity_target(latents, eps), num_frames


T_BUCKETS = 4


def t_bucket_sums(mse_BxN, t_BxN, num_frames_BxN):
  """(loss sum [K], shot count [K]) per timestep bucket, valid shots only."""
  bucket_BxN = jnp.clip((t_BxN * T_BUCKETS).astype(jnp.int32), 0,
                        T_BUCKETS - 1)
  onehot_BxNxK = jax.nn.one_hot(bucket_BxN, T_BUCKETS) * (
      num_frames_BxN > 0)[..., None]
  return (jnp.einsum("bn,bnk->k", mse_BxN, onehot_BxNxK),
          jnp.sum(onehot_BxNxK, axis=(0, 1)))


def loss_sum_fn(params, graphdef, config, batch, keys_B):
  """-> (sum of per-shot losses, (valid shot count, t-bucket sums, counts))."""
  dtype = jnp.dtype(config.model.compute_dtype)
  inputs, target, num_frames = prepare(config, batch, keys_B)
  model = nnx.merge(graphdef, cast_floats(params, dtype))
  v_pred = model(inputs["latents"], inputs["t_BxN"], inputs["text"],
                 inputs["text_len"], inputs["num_frames"],
                 pooled_BxGxP=inputs["pooled"])
  loss_sum, count = flow.shot_loss_sum(v_pred, target, num_frames)
  mse_BxN = flow.per_shot_mse(v_pred, target, num_frames)
  return loss_sum, (count, *t_bucket_sums(mse_BxN, inputs["t_BxN"],
                                          num_frames))


def _microbatches(tree, k: int):
  """[B, ...] -> [k, B / k, ...]; microbatch j holds examples j, j + k, ...

  Strided, not contiguous: the batch is sharded over its mesh axes in
  contiguous runs, so with strides every device holds its share of every
  microbatch and the scan moves no data. (Contiguous microbatches would
  each live on a few devices; the step then reshuffles the whole batch, and
  its compile for a 64-chip slice did not finish in 20 minutes.)
  """
  def split(x):
    x = jnp.swapaxes(x.reshape((x.shape[0] // k, k) + x.shape[1:]), 0, 1)
    return parallel.constrain(x, (None, "batch") + (None,) * (x.ndim - 2))
  return jax.tree.map(split, tree)


def grads_and_stats(params, batch: dict, keys_B: jax.Array, *, graphdef,
                    config):
  """-> (loss sum, valid shot count, gradient sum, (t-bucket sums, counts)).

  With `train.grad_accum = k` the batch is split into k microbatches that are
  run one after another (a scan), so activation memory is that of B / k.
  """
  k = config.train.grad_accum
  grad_fn = jax.value_and_grad(loss_sum_fn, has_aux=True)
  if k == 1:
    (loss_sum, (count, t_sum, t_count)), grads = grad_fn(
        params, graphdef, config, batch, keys_B)
    return loss_sum, count, grads, (t_sum, t_count)

  def micro(acc, xs):
    mb, keys = xs
    (ls, aux), g = grad_fn(params, graphdef, config, mb, keys)
    acc_ls, acc_aux, acc_g = acc
    return (acc_ls + ls, jax.tree.map(jnp.add, acc_aux, aux),
            jax.tree.map(jnp.add, acc_g, g)), None

  zeros_k = jnp.zeros((T_BUCKETS,), jnp.float32)
  init = (jnp.zeros((), jnp.float32),
          (jnp.zeros((), jnp.float32), zeros_k, zeros_k),
          jax.tree.map(jnp.zeros_like, params))
  (loss_sum, (count, t_sum, t_count), grads), _ = jax.lax.scan(
      micro, init, (_microbatches(batch, k), _microbatches(keys_B, k)))
  return loss_sum, count, grads, (t_sum, t_count)


def compute_grads(params, batch: dict, keys_B: jax.Array, *, graphdef, config):
  """-> (loss sum, valid shot count, gradient sum) over the whole batch."""
  loss_sum, count, grads, _ = grads_and_stats(params, batch, keys_B,
                                              graphdef=graphdef, config=config)
  return loss_sum, count, grads


def ema_decay_at(step, ema_decay: float) -> jax.Array:
  """The EMA decay of update `step` (0-based): min(ema_decay, (1 + step) /
  (10 + step)), the warm-up of TensorFlow's ExponentialMovingAverage and
  diffusers' EMAModel. Without it a run's EMA holds its initial weights
  for about 1 / (1 - ema_decay) steps: random ones, or after
  `train.init_from` the earlier stage's, which are not what this run
  learns (BENCHMARKS.md, "Session of 2026-12-04 (fourth)")."""
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(jnp.float32(ema_decay), (1.0 + step) / (10.0 + step))


def train_step(state: TrainState, batch: dict, rng: jax.Array, *, graphdef,
               config, tx: optax.GradientTransformation,
               schedule: optax.Schedule) -> tuple[TrainState, dict]:
  """The pure step; `make_train_step` jits it.

  `tx` must be the transformation `state.opt_state` was made with, and
  `schedule` its learning-rate schedule (reported as `lr`).
  """
  keys_B = jax.random.split(rng, batch["latents"].shape[0])
  loss_sum, count, grads, (t_sum, t_count) = grads_and_stats(
      state.params, batch, keys_B, graphdef=graphdef, config=config)
  denom = jnp.maximum(count, 1.0)
  grads = jax.tree.map(lambda g: g / denom, grads)
  loss, grad_norm = loss_sum / denom, optax.tree.norm(grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  decay = ema_decay_at(state.step, config.optim.ema_decay)
  ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p,
                     state.ema_params, params)
  # A non-finite loss or gradient keeps the old params, moments and EMA.
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  keep = lambda new, old: jax.tree.map(
      lambda n, o: jnp.where(finite, n, o), new, old)
  new_state = TrainState(
      step=state.step + 1, params=keep(params, state.params),
      opt_state=keep(opt_state, state.opt_state),
      ema_params=keep(ema, state.ema_params),
      skipped=state.skipped + (~finite).astype(jnp.int32))
  metrics = dict(loss=loss, grad_norm=grad_norm, lr=schedule(state.step),
                 shots=count, finite=finite)
  for k in range(T_BUCKETS):
    metrics[f"loss_t{k}"] = t_sum[k] / jnp.maximum(t_count[k], 1.0)
    metrics[f"shots_t{k}"] = t_count[k]
  # Pin the updated state to its shardings: left to propagation, an
  # fsdp-sharded parameter can come back replicated (undoing FSDP).
  new_state = sharding.constrain_state(config, new_state)
  return new_state, metrics


class TrainStep:
  """The jitted step behind a pre-trace check of config and batch shapes.

  With aspect-ratio buckets (`data.buckets`) a batch may come on any bucket's
  grid: the step keeps one jitted function per grid, each with the model
  (graphdef) and config of that grid; the parameters are the same for all.
  """

  def __init__(self, graphdef, config, *, donate: bool = True):
    configlib.validate(config)
    self.config = config
    self._donate = donate
    # The same object as create_train_state's (optimizer_for builds once).
    opt = optimizer_for(config)
    self._schedule, self._tx = opt.schedule, opt.tx
    self._grids = buckets.config_grids(config)
    self._steps = {}      # grid -> (config of the grid, jitted step)
    self._steps[(config.scene.height, config.scene.width)] = (
        config, self._jit(graphdef, config))

  def _jit(self, graphdef, config):
    fn = functools.partial(train_step, graphdef=graphdef, config=config,
                           tx=self._tx, schedule=self._schedule)
    return jax.jit(fn, donate_argnums=(0,) if self._donate else ())

  def _for(self, batch: dict):
    """(config, jitted step) for the batch's grid; checks the batch."""
    lat = batch.get("latents") if isinstance(batch, dict) else None
    grid = tuple(lat.shape[3:5]) if lat is not None and len(
        lat.shape) == 6 else None
    if grid in self._grids and grid not in self._steps:
      config = configlib.with_grid(self.config, *grid)
      graphdef, _ = abstract_model(config)
      self._steps[grid] = (config, self._jit(graphdef, config))
    config, jitted = self._steps.get(grid, self._steps[
        (self.config.scene.height, self.config.scene.width)])
    batch_lib.validate_batch(batch, config)
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is not None and not mesh.empty:
      check_mesh(config, mesh)
    B = batch["latents"].shape[0]
    if B % config.train.grad_accum:
      raise ValueError(f"batch size {B} is not divisible by "
                       f"train.grad_accum={config.train.grad_accum}")
    return config, jitted

  def validate(self, batch: dict) -> None:
    self._for(batch)

  def cache_size(self) -> int:
    """Compiled traces over all grids (0 until a batch was accepted)."""
    return sum(jitted._cache_size() for _, jitted in self._steps.values())  # pylint: disable=protected-access

  def lower(self, state, batch, rng):
    return self._for(batch)[1].lower(state, batch, rng)

  def __call__(self, state, batch, rng):
    return self._for(batch)[1](state, batch, rng)


def make_train_step(graphdef, config, *, donate: bool = True) -> TrainStep:
  return TrainStep(graphdef, config, donate=donate)
