"""Interactive direction: propose a shot, regenerate it, accept it, choose
the history, continue (docs/design.md section 9).

  from lct_jax.sampling.interactive import Director
  d = Director.from_workdir("runs/demo_causal",
                            "Character 1 is a large red circle on a "
                            "checkered teal background.", guidance=2.0)
  take = d.propose("[SHOT CUT] wide shot, Character 1 moves right.", seed=0)
  take = d.propose("[SHOT CUT] wide shot, Character 1 moves left.", seed=1)
  d.accept(take)                                 # history shot 0
  d.accept(d.propose("[SHOT CUT] close shot, Character 1 stays still.",
                     frames=1))                  # history shot 1
  d.accept(d.propose("[SHOT CUT] medium shot, Character 1 moves up.",
                     history=[0]))               # conditioned on shot 0 only
  d.save("out/directed")

Proposals change nothing; `accept` adds a take to the history. In 'causal'
mode (context-causal models) an accepted take is noised to t_c, run once and
its K/V cached, so later proposals compute only their own tokens; in
'bidirectional_ar' mode the chosen history is re-run as conditions at every
step. `history` picks which accepted shots condition a proposal (default:
all; at most scene.max_shots - 1, the model's window).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from lct_jax.sampling import decode, load, outputs
from lct_jax.sampling.sampler import Sampler, Scene, Shot
from lct_jax.sampling.scene_file import TextEncoder


@dataclasses.dataclass
class Take:
  """A proposed shot: its prompt, the Shot it was made from, the latents."""
  prompt: str
  shot: Shot
  latents: np.ndarray
  history: tuple[int, ...]


class Director:
  """Shot-by-shot generation with a human choosing what to keep.

  Args:
    sampler: a `Sampler` (its steps, guidance, t_c and cache capacity).
    global_prompt: the scene's global prompt.
    mode: 'causal' (KV cache) or 'bidirectional_ar' (no cache).
    encode: prompt -> (text, text_len, pooled); default: the model's
      (`scene_file.TextEncoder`).
  """

  def __init__(self, sampler: Sampler, global_prompt: str, *,
               mode: str = "causal", encode=None):
    if mode not in ("causal", "bidirectional_ar"):
      raise ValueError(f"mode={mode!r}: 'causal' or 'bidirectional_ar'")
    self.sampler, self.mode = sampler, mode
    if encode is None:
      text_encoder = TextEncoder(sampler.config)
      encode = lambda p: text_encoder(p, "prompt", "<director>")
    self._encode = encode
    text, n, pooled = encode(global_prompt)
    self.global_prompt = global_prompt
    self.scene = Scene(text, n, [], pooled)
    self.takes: list[Take] = []             # accepted, in order
    self._cache = sampler.new_cache(self.scene) if mode == "causal" else None

  @classmethod
  def from_workdir(cls, workdir: str, global_prompt: str, *, mode=None,
                   use_ema: bool | None = None, capacity: int = 16,
                   mesh=None, **sampler_kwargs) -> "Director":
    """A Director over a train.py work directory's newest checkpoint.

    `mode` defaults to 'causal' for context-causal models, else
    'bidirectional_ar'; `sampler_kwargs` (steps, shift, cfg_scale, t_c, eta)
    default to the run's `sample.*` config; `mesh` (a `make_mesh` mesh)
    samples sharded, the weights restored straight onto it."""
    config = load.load_config(workdir)
    s = config.sample
    use_ema = s.use_ema if use_ema is None else use_ema
    config, graphdef, params, _ = load.load_model(workdir, use_ema=use_ema,
                                                  config=config, mesh=mesh)
    for k in ("steps", "shift", "cfg_scale", "t_c", "eta"):
      sampler_kwargs.setdefault(k, s[k])
    sampler = Sampler(config, graphdef, params, capacity=capacity,
                      mesh=mesh, **sampler_kwargs)
    if mode is None:
      mode = ("causal" if config.model.attention_mask == "context_causal"
              else "bidirectional_ar")
    return cls(sampler, global_prompt, mode=mode)

  @property
  def history(self) -> list[Take]:
    return list(self.takes)

  def _pool(self, history) -> tuple[int, ...]:
    k = len(self.takes)
    pool = tuple(range(k)) if history is None else tuple(sorted(set(history)))
    bad = [j for j in pool if not 0 <= j < k]
    if bad:
      raise ValueError(f"history {list(history)}: {bad} are not accepted "
                       f"shots (0..{k - 1})")
    window = self.sampler.geom.max_shots - 1
    if len(pool) > window:
      raise ValueError(f"history of {len(pool)} shots: the model's window "
                       f"holds {window} (scene.max_shots - 1); choose fewer")
    return pool

  def propose(self, prompt: str, *, frames: int | None = None,
              seed: int | None = None, history=None) -> Take:
    """Generates a candidate next shot; call again to regenerate it."""
    text, n, pooled = self._encode(prompt)
    frames = frames or self.sampler.geom.frames
    seed = len(self.takes) * 1000 if seed is None else seed
    shot = Shot(text, n, frames, pooled=pooled, seed=seed)
    pool = self._pool(history)
    if self.mode == "causal":
      z = self.sampler.denoise_cached(self._cache, pool, shot)
    else:
      self.scene.shots = [t.shot for t in self.takes]
      z = self.sampler.ar_step(self.scene, list(pool),
                               [t.latents for t in self.takes], shot)
    return Take(prompt, shot, z, pool)

  def accept(self, take: Take) -> int:
    """Adds a take to the history; returns its index."""
    k = len(self.takes)
    if self.mode == "causal":
      if k >= self.sampler.capacity:
        raise ValueError(f"the KV cache is full ({self.sampler.capacity} "
                         "shots); make a Director with a larger capacity")
      self._cache = self.sampler.encode_cached(
          self._cache, k, take.history, take.shot, take.latents)
    self.takes.append(take)
    return k

  def save(self, out_dir: str, fps: int = 4, *, vae=None) -> dict:
    """Writes the accepted shots like sample.py does; a latent-space model's
    through `vae` (an `lct_jax.vae.AutoencoderKL`) to video."""
    if not self.takes:
      raise ValueError("nothing accepted yet")
    settings = {"mode": self.mode, "global_prompt": self.global_prompt,
                "shots": [{"prompt": t.prompt, "seed": t.shot.seed,
                           "frames": t.shot.num_frames,
                           "history": list(t.history)} for t in self.takes]}
    return outputs.write_scene(
        out_dir, [t.latents for t in self.takes],
        [t.shot.num_frames for t in self.takes], settings,
        config=self.sampler.config, prompts=[t.prompt for t in self.takes],
        global_prompt=self.global_prompt, fps=fps,
        decode=None if vae is None else decode.vae_decoder(
            vae, self.sampler.config))
