"""Scenes to sample, and the three sampling modes over one set of weights.

A `Scene` is host-side data: the global prompt's text arrays and a list of
`Shot`s (text arrays, length in latent frames, optional given latents, t_c,
seed). `Sampler` turns one into latents per shot:
  joint             all shots in one scene, generated together; given shots
                    are conditions (bidirectional model);
  causal            shot after shot against a KV cache of the history
                    (context-causal model);
  bidirectional_ar  shot after shot, the history re-run as conditions at
                    every step, no cache (the paper's Table 2 comparison;
                    with a causal model, the cache's reference).
Noise is a function of a shot's seed only (`shot_noise`), so a shot draws
the same noise in every mode and slot: modes are comparable shot by shot.

Under a mesh (`Sampler(..., mesh=)`) the parameters are sharded as in
training (FSDP over 'fsdp', heads and MLP over 'tensor'), every jitted call
runs under the mesh, the scene's tokens and the KV cache's video tokens are
sharded over 'context' with the model's context strategy, and the numbers
are those of one device (tests/test_sharded_sampling.py).
"""
from __future__ import annotations

import contextlib
import dataclasses

import jax
import numpy as np

from lct_jax.layout import SceneGeometry
from lct_jax.model import kv_cache
from lct_jax.attention.context import check_mesh
from lct_jax.model.sharding import param_shardings
from lct_jax.sampling import causal as causal_lib
from lct_jax.sampling import euler
from lct_jax.sampling import joint as joint_lib


@dataclasses.dataclass
class Shot:
  text: np.ndarray                  # int32 [L] token ids, or float [L, E]
  text_len: int
  num_frames: int                   # latent frames, 1..scene.frames
  pooled: np.ndarray | None = None  # [P] (embeddings mode with pooled text)
  latents: np.ndarray | None = None  # given: [F, H, W, C]; a condition
  t_c: float | None = None          # its timestep as history/condition in
                                    # [0, 1]; None: 0 if given, else the
                                    # sampler's history t_c
  seed: int = 0
  history: tuple[int, ...] | None = None  # causal/AR: earlier shots that
                                    # condition this one; None = all


@dataclasses.dataclass
class Scene:
  text: np.ndarray                  # the global prompt: [L] or [L, E]
  text_len: int
  shots: list[Shot]
  pooled: np.ndarray | None = None


def to_host(x) -> np.ndarray:
  """A result on the host; with several processes, every process gets the
  whole array (each holds only its devices' shards)."""
  if getattr(x, "is_fully_addressable", True):
    return np.asarray(x)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def shot_noise(seed: int, shape) -> tuple[np.ndarray, np.ndarray]:
  """(starting noise, fixed condition/history noise) of a shot."""
  key = jax.random.key(seed)
  return (np.asarray(euler.noise_like_shot(key, 0, shape)),
          np.asarray(euler.noise_like_shot(key, 1, shape)))


class Sampler:
  """Samples scenes from one model's parameters (raw or EMA: the caller's).

  Args:
    config: the model's config (`model` and `scene` sections are used).
    graphdef: the MMDiT graphdef (`lct_jax.training.abstract_model`).
    params: its parameters (a pure dict).
    steps: Euler steps per shot.
    shift: the time grid's shift (`euler.timesteps`).
    cfg_scale: text guidance; 1 runs no unconditional branch.
    eta: 0 for the deterministic Euler sampler; > 0 (at most 1, DDPM's
      posterior noise) for the stochastic one, whose fresh noise is a
      function of each shot's seed (`euler.churn_keys`).
    t_c: the history timestep in [0, 1] for generated shots in causal and
      auto-regressive modes.
    capacity: KV cache slots (causal); default scene.max_shots - 1.
    guidance: the embedded guidance value, for models with
      model.guidance_embeds (default `sample.embedded_guidance`).
    mesh: a ('data', 'fsdp', 'context', 'tensor') mesh to sample on
      (`lct_jax.parallel.make_mesh`); None: one device. The parameters are
      placed on it here (a copy unless they already are).
  """

  def __init__(self, config, graphdef, params, *, steps: int = 20,
               shift: float = 1.0, cfg_scale: float = 1.0, t_c: float = 0.3,
               eta: float = 0.0,
               capacity: int | None = None, guidance: float | None = None,
               mesh=None):
    self.config, self.graphdef = config, graphdef
    self.mesh = mesh
    if mesh is not None:
      check_mesh(config, mesh)          # a clear error before any tracing
      params = jax.device_put(params, param_shardings(config, params, mesh))
    self.params = params
    self.geom = SceneGeometry.from_config(config)
    if not 0.0 <= t_c <= 1.0:
      raise ValueError(f"t_c={t_c} must be in [0, 1] (0-1000 on the paper's "
                       "scale)")
    self.ts = euler.timesteps(steps, shift)
    if not 0.0 <= eta <= 1.0:
      raise ValueError(f"eta={eta} must be in [0, 1] (0: deterministic "
                       "Euler, 1: DDPM's posterior noise)")
    self.eta = float(eta)
    self.cfg_scale, self.t_c = float(cfg_scale), float(t_c)
    self.use_cfg = self.cfg_scale != 1.0
    self.capacity = capacity or kv_cache.default_capacity(self.geom)
    if config.model.guidance_embeds and guidance is None:
      guidance = config.sample.embedded_guidance
    self.guidance_B = (None if guidance is None
                       else np.full((1,), guidance, np.float32))

  # --- helpers ----------------------------------------------------------------
  def on_mesh(self):
    """The context every jitted call runs in: the mesh, if any."""
    if self.mesh is None:
      return contextlib.nullcontext()
    return jax.set_mesh(self.mesh)

  @property
  def shot_shape(self):
    g = self.geom
    return (g.frames, g.height, g.width, g.channels)

  def shot_t_c(self, shot: Shot) -> float:
    if shot.t_c is not None:
      return float(shot.t_c)
    return 0.0 if shot.latents is not None else self.t_c

  def check(self, scene: Scene, *, window: int) -> None:
    if not scene.shots:
      raise ValueError("a scene needs at least one shot")
    if window > self.geom.max_shots:
      raise ValueError(
          f"{window} shots in one scene window, but the model holds "
          f"scene.max_shots={self.geom.max_shots}")
    for i, s in enumerate(scene.shots):
      if not 1 <= s.num_frames <= self.geom.frames:
        raise ValueError(f"shots[{i}].num_frames={s.num_frames} must be in "
                         f"[1, scene.frames={self.geom.frames}]")

  def _scene_batch(self, scene: Scene, shots: list[Shot], latents: list):
    """A batch of one scene holding `shots` in slots 1..len(shots)."""
    g, m = self.geom, self.config.model
    N = g.max_shots
    text = np.zeros((1, N + 1) + scene.text.shape, scene.text.dtype)
    text_len = np.zeros((1, N + 1), np.int32)
    text[0, 0], text_len[0, 0] = scene.text, scene.text_len
    lat = np.zeros((1, N) + self.shot_shape, np.float32)
    num_frames = np.zeros((1, N), np.int32)
    for i, (s, z) in enumerate(zip(shots, latents)):
      text[0, i + 1], text_len[0, i + 1] = s.text, s.text_len
      num_frames[0, i] = s.num_frames
      if z is not None:
        lat[0, i] = z
    batch = {"latents": lat, "num_frames": num_frames, "text": text,
             "text_len": text_len}
    if m.text_mode == "embeddings" and m.use_pooled_text:
      pooled = np.zeros((1, N + 1, m.pooled_dim), np.float32)
      pooled[0, :len(shots) + 1] = [scene.pooled] + [s.pooled for s in shots]
      batch["pooled"] = pooled
    return batch

  def _condition_arrays(self):
    """Zeros of (cond, t_cond, eps_gen, eps_cond) for one scene window."""
    N = self.geom.max_shots
    eps = np.zeros((1, N) + self.shot_shape, np.float32)
    return (np.zeros((1, N), bool), np.zeros((1, N), np.float32), eps,
            np.zeros_like(eps))

  def _churn(self, seeds_K) -> np.ndarray | None:
    """Stochastic-sampler keys [K, 2] of shots with these seeds, or None
    for the deterministic sampler."""
    if not self.eta:
      return None
    return np.stack([euler.churn_keys(s) for s in seeds_K])

  def _joint_call(self, batch, cond, t_cond, eps_gen, eps_cond, seeds_N):
    fn = joint_lib.jitted(self.graphdef)
    churn = self._churn(seeds_N)
    with self.on_mesh():
      return to_host(fn(self.params, batch, cond, t_cond, eps_gen,
                        eps_cond, self.ts, self.cfg_scale, self.guidance_B,
                        use_cfg=self.use_cfg,
                        churn=None if churn is None else churn[None],
                        eta=self.eta))

  def _history(self, shot: Shot, k: int) -> list[int]:
    if shot.history is None:
      return list(range(k))
    bad = [j for j in shot.history if not 0 <= j < k]
    if bad:
      raise ValueError(f"shots[{k}].history={list(shot.history)}: entries "
                       f"{bad} are not earlier shots (0..{k - 1})")
    return sorted(set(shot.history))

  # --- modes ----------------------------------------------------------------
  def joint(self, scene: Scene) -> list[np.ndarray]:
    """All shots at once; given shots are conditions (returned as given)."""
    n = len(scene.shots)
    self.check(scene, window=n)
    batch = self._scene_batch(scene, scene.shots,
                              [s.latents for s in scene.shots])
    cond, t_cond, eps_gen, eps_cond = self._condition_arrays()
    for i, s in enumerate(scene.shots):
      cond[0, i] = s.latents is not None
      t_cond[0, i] = self.shot_t_c(s)
      eps_gen[0, i], eps_cond[0, i] = shot_noise(s.seed, self.shot_shape)
    seeds = [s.seed for s in scene.shots]
    seeds += [0] * (self.geom.max_shots - n)
    out = self._joint_call(batch, cond, t_cond, eps_gen, eps_cond, seeds)
    return [out[0, i] for i in range(n)]

  def bidirectional_ar(self, scene: Scene) -> list[np.ndarray]:
    """Shot after shot; the history pool re-run as conditions every step."""
    done: list[np.ndarray] = []
    for k, shot in enumerate(scene.shots):
      if shot.latents is not None:
        done.append(np.asarray(shot.latents, np.float32))
        continue
      pool = self._history(shot, k)
      self.check(scene, window=len(pool) + 1)
      done.append(self.ar_step(scene, pool, done, shot))
    return done

  def ar_step(self, scene: Scene, pool: list[int], done: list, shot: Shot):
    """One new shot with scene shots `pool` (finished) as conditions."""
    hist = [scene.shots[j] for j in pool]
    batch = self._scene_batch(scene, hist + [shot],
                              [done[j] for j in pool] + [None])
    cond, t_cond, eps_gen, eps_cond = self._condition_arrays()
    cond[0, :len(pool)] = True
    for i, h in enumerate(hist):
      t_cond[0, i] = self.shot_t_c(h)
      eps_cond[0, i] = shot_noise(h.seed, self.shot_shape)[1]
    eps_gen[0, len(pool)] = shot_noise(shot.seed, self.shot_shape)[0]
    seeds = [h.seed for h in hist] + [shot.seed]
    seeds += [0] * (self.geom.max_shots - len(seeds))
    out = self._joint_call(batch, cond, t_cond, eps_gen, eps_cond, seeds)
    return out[0, len(pool)]

  # --- causal: cache primitives (also the interactive API's) ------------------
  def new_cache(self, scene: Scene):
    init_fn, _, _ = causal_lib.jitted(self.graphdef)
    pooled = None if scene.pooled is None else np.asarray(scene.pooled)[None]
    with self.on_mesh():
      return init_fn(self.params, np.asarray(scene.text)[None],
                     np.asarray([scene.text_len], np.int32), pooled,
                     capacity=self.capacity, use_cfg=self.use_cfg,
                     guidance_B=self.guidance_B)

  def _shot_args(self, shot: Shot):
    pooled = None if shot.pooled is None else np.asarray(shot.pooled)[None]
    return (np.asarray(shot.text)[None],
            np.asarray([shot.text_len], np.int32), pooled)

  def pool_mask(self, slots) -> np.ndarray:
    pool = np.zeros((1, self.capacity), bool)
    pool[0, list(slots)] = True
    return pool

  def denoise_cached(self, cache, slots, shot: Shot) -> np.ndarray:
    """A new shot against cache slots `slots` (the history pool)."""
    _, denoise_fn, _ = causal_lib.jitted(self.graphdef)
    text, text_len, pooled = self._shot_args(shot)
    eps = shot_noise(shot.seed, self.shot_shape)[0][None]
    with self.on_mesh():
      z = denoise_fn(self.params, cache, self.pool_mask(slots), text,
                     text_len, pooled, np.asarray([shot.num_frames], np.int32),
                     eps, self.ts, self.cfg_scale, self._churn([shot.seed]),
                     self.eta, use_cfg=self.use_cfg,
                     guidance_B=self.guidance_B)
      return to_host(z)[0]

  def encode_cached(self, cache, slot: int, slots, shot: Shot, latents):
    """Writes a finished shot (noised to its t_c) into cache slot `slot`."""
    if not 0 <= slot < self.capacity:
      raise ValueError(f"cache slot {slot} outside the cache's "
                       f"{self.capacity} slots")
    _, _, encode_fn = causal_lib.jitted(self.graphdef)
    text, text_len, pooled = self._shot_args(shot)
    eps_c = shot_noise(shot.seed, self.shot_shape)[1][None]
    with self.on_mesh():
      return encode_fn(self.params, cache, np.int32(slot),
                       self.pool_mask(slots),
                       np.asarray(latents, np.float32)[None], eps_c,
                       np.asarray([self.shot_t_c(shot)], np.float32),
                       text, text_len, pooled,
                       np.asarray([shot.num_frames], np.int32),
                       use_cfg=self.use_cfg, guidance_B=self.guidance_B)

  def causal(self, scene: Scene) -> list[np.ndarray]:
    """Shot after shot against the KV cache; shot k lives in slot k."""
    n = len(scene.shots)
    if n > self.capacity + 1:
      raise ValueError(f"{n} shots need {n - 1} cache slots, but the cache "
                       f"holds {self.capacity} (scene.max_shots="
                       f"{self.geom.max_shots})")
    self.check(scene, window=1)
    cache = self.new_cache(scene)
    done: list[np.ndarray] = []
    for k, shot in enumerate(scene.shots):
      pool = self._history(shot, k)
      self.check(scene, window=len(pool) + 1)
      if shot.latents is not None:
        z = np.asarray(shot.latents, np.float32)
      else:
        z = self.denoise_cached(cache, pool, shot)
      done.append(z)
      if k < n - 1:     # the last shot conditions nothing: no encode
        cache = self.encode_cached(cache, k, pool, shot, z)
    return done
