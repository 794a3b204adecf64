"""Deterministic synthetic multi-shot scenes with known hidden factors.

A scene is one sprite ("Character 1") in one environment, filmed as 1..N
shots. Hidden factors (ground truth kept with every shot):
  per scene  identity: shape, sprite colour, size (small / large);
             environment: background colour, texture, lighting tint
  per shot   framing (close / medium / wide scales the sprite), action
             (the sprite's motion over the shot's frames)
The global prompt states shape, colour, size, background colour and texture;
shot prompts state framing and action. The lighting tint is in NO prompt, so
only scene context can keep it consistent across shots.

One scene in four is a continuous take cut into segments: no "[SHOT CUT]",
one framing throughout, and the sprite's track carries over between
segments. Other scenes prefix every shot prompt with "[SHOT CUT]"; in those,
one shot in four is a single image (F = 1, action "still").

Geometry is exact by construction (this is what lets `consistency.py`
recover factors from pixels): sprite centres sit on pixel corners at integer
coordinates and move by whole pixels, so a (shape, radius) always rasterises
to the same mask; the sprite never enters a `margin`-wide border ring, which
is pure background; all base colours are <= 235 and the texture modulation
is +-12%, so nothing clips.
"""
from __future__ import annotations

import dataclasses

import numpy as np

SHOT_CUT = "[SHOT CUT]"

# Palettes [choice]: every (colour, tint) pair is >= 22 RGB units from every
# other pair, and sprites stay >= 45 units from every background level, so
# colours, tints and the sprite mask all decode from pixels.
SPRITE_COLORS = {"red": (210, 60, 60), "green": (40, 170, 60),
                 "blue": (80, 140, 235), "yellow": (210, 200, 40),
                 "white": (210, 210, 210)}
BACKGROUND_COLORS = {"grey": (110, 110, 110), "navy": (40, 60, 140),
                     "teal": (40, 120, 120), "brown": (150, 100, 60),
                     "purple": (110, 50, 130)}
# Lighting: a per-channel multiplier over the whole frame. Never captioned.
TINTS = {"neutral": (1.0, 1.0, 1.0), "warm": (1.0, 0.78, 0.56),
         "cool": (0.56, 0.78, 1.0)}
TEXTURES = ("plain", "striped", "checkered")
TEXTURE_AMPLITUDE = 0.12          # background brightness x (1 +- this)
SHAPES = ("circle", "square", "triangle", "diamond")
SIZES = ("small", "large")
FRAMINGS = ("wide", "medium", "close")
# action -> (dy, dx) per frame, in units of the shot's speed.
ACTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0),
           "still": (0, 0)}
ACTION_PHRASES = {a: "stays still" if a == "still" else f"moves {a}"
                  for a in ACTIONS}
SCENE_FACTORS = ("shape", "sprite_color", "size", "background_color",
                 "texture", "tint")
SHOT_FACTORS = ("framing", "action")

P_CONTINUOUS = 0.25               # scenes that are one take in segments
P_IMAGE = 0.25                    # image shots in scenes with cuts


def scale_for(size: int) -> float:
  return size / 32.0


def margin_for(size: int) -> int:
  """Width of the sprite-free border ring (background reference)."""
  return max(2, size // 16)


def radius_level(size_name: str, framing: str) -> int:
  """Sprite radius level 0..5: sizes and framings interleave, so the level
  alone identifies both (small: 0, 2, 4; large: 1, 3, 5)."""
  return SIZES.index(size_name) + 2 * FRAMINGS.index(framing)


# Sprite radius per level at size 32: about 25% apart (56% in area), and
# chosen so that every shape rasterises differently at every level (on
# pixel-corner centres a diamond only changes at whole radii).
RADII = (3.0, 4.0, 5.0, 6.5, 8.0, 10.0)


def radius(level: int, size: int) -> float:
  return RADII[level] * scale_for(size)


def extent(level: int, size: int) -> int:
  """Half-extent in pixels that bounds every shape at this level."""
  return int(np.ceil(1.05 * radius(level, size)))


def speed_for(size: int) -> int:
  return max(1, round(2 * scale_for(size)))


def shape_mask(shape: str, r: float, center_yx, size: int) -> np.ndarray:
  """bool [size, size]: pixels whose centres lie inside the shape.

  `center_yx` is an integer pixel corner, so the mask only translates as
  the sprite moves.
  """
  coords = np.arange(size) + 0.5
  yy = coords[:, None] - center_yx[0]
  xx = coords[None, :] - center_yx[1]
  if shape == "circle":
    return yy**2 + xx**2 <= r**2
  if shape == "square":
    return np.maximum(np.abs(yy), np.abs(xx)) <= 0.8 * r
  if shape == "diamond":
    return np.abs(yy) + np.abs(xx) <= r
  if shape == "triangle":          # apex up, base at 0.7 r
    return (yy <= 0.7 * r) & (np.abs(xx) <= 0.6 * (yy + r))
  raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def texture_map(texture: str, size: int) -> np.ndarray:
  """float [size, size] brightness multiplier: 1 or 1 +- amplitude."""
  period = max(2, round(4 * scale_for(size)))
  band = (np.arange(size) // period) % 2
  if texture == "plain":
    sign = np.zeros((size, size))
  elif texture == "striped":         # vertical stripes
    sign = np.broadcast_to(band[None, :], (size, size)) * 2 - 1
  elif texture == "checkered":
    sign = ((band[:, None] + band[None, :]) % 2) * 2 - 1
  else:
    raise ValueError(f"unknown texture {texture!r}; expected {TEXTURES}")
  return 1.0 + TEXTURE_AMPLITUDE * sign


def render_frame(scene_factors: dict, level: int, center_yx,
                 size: int) -> np.ndarray:
  """uint8 [size, size, 3]: textured background, sprite, then lighting."""
  bg = np.asarray(BACKGROUND_COLORS[scene_factors["background_color"]], float)
  frame = texture_map(scene_factors["texture"], size)[..., None] * bg
  mask = shape_mask(scene_factors["shape"], radius(level, size), center_yx,
                    size)
  frame[mask] = SPRITE_COLORS[scene_factors["sprite_color"]]
  frame = frame * np.asarray(TINTS[scene_factors["tint"]])
  return np.clip(np.round(frame), 0, 255).astype(np.uint8)


@dataclasses.dataclass
class Shot:
  frames: np.ndarray               # uint8 [F, size, size, 3]
  prompt: str
  has_cut: bool
  factors: dict                    # scene factors + framing + action (names)
  centers: np.ndarray              # int [F, 2] sprite centre (y, x) per frame


@dataclasses.dataclass
class Scene:
  scene_id: str
  global_prompt: str
  shots: list[Shot]
  continuous: bool                 # one take in segments (no cuts)


def global_prompt(f: dict) -> str:
  return (f"Character 1 is a {f['size']} {f['sprite_color']} {f['shape']} "
          f"on a {f['texture']} {f['background_color']} background.")


def shot_prompt(framing: str, action: str, has_cut: bool) -> str:
  text = f"{framing} shot, Character 1 {ACTION_PHRASES[action]}."
  return f"{SHOT_CUT} {text}" if has_cut else text


def _center_range(level: int, size: int) -> tuple[int, int]:
  """Inclusive range of centre coordinates that keeps the sprite in bounds."""
  pad = margin_for(size) + extent(level, size)
  return pad, size - pad


def _track(start_yx, action: str, speed: int, num_frames: int, first: int):
  """int [F, 2]: start + (first + t) * velocity, t = 0..F-1."""
  velocity = np.asarray(ACTIONS[action]) * speed
  steps = first + np.arange(num_frames)
  return np.asarray(start_yx)[None, :] + steps[:, None] * velocity[None, :]


def _feasible(track, level: int, size: int) -> bool:
  lo, hi = _center_range(level, size)
  return bool(np.all((track >= lo) & (track <= hi)))


def _shot_speed(level: int, size: int, num_frames: int) -> int:
  """Nominal speed, slowed where a long shot would leave the frame."""
  lo, hi = _center_range(level, size)
  if num_frames < 2:
    return speed_for(size)
  return max(1, min(speed_for(size), (hi - lo) // (num_frames - 1)))


def _cut_shot(rng, level_of, num_frames: int, size: int):
  framing = FRAMINGS[rng.integers(len(FRAMINGS))]
  level = level_of(framing)
  speed = _shot_speed(level, size, num_frames)
  lo, hi = _center_range(level, size)
  if num_frames == 1:
    action = "still"               # motion is unobservable in one image
  else:
    options = [a for a in ACTIONS
               if a == "still" or (hi - lo) >= speed * (num_frames - 1)]
    action = options[rng.integers(len(options))]
  # Start anywhere the whole track stays in bounds.
  travel = np.asarray(ACTIONS[action]) * speed * (num_frames - 1)
  start = [rng.integers(lo - min(d, 0), hi - max(d, 0) + 1) for d in travel]
  return framing, action, _track(start, action, speed, num_frames, 0)


def _make_shot(scene_factors, framing, action, track, has_cut, level, size):
  frames = np.stack([render_frame(scene_factors, level, c, size)
                     for c in track])
  factors = dict(scene_factors, framing=framing, action=action)
  return Shot(frames=frames, prompt=shot_prompt(framing, action, has_cut),
              has_cut=has_cut, factors=factors, centers=track)


def generate_scene(seed: int, *, max_shots: int = 4, max_frames: int = 4,
                   size: int = 32) -> Scene:
  """One scene, a pure function of its arguments (numpy Generator(seed))."""
  if not 1 <= max_shots or not 1 <= max_frames or size < 16:
    raise ValueError(f"need max_shots >= 1, max_frames >= 1, size >= 16; got "
                     f"{max_shots}, {max_frames}, {size}")
  rng = np.random.default_rng(seed)
  pick = lambda names: list(names)[rng.integers(len(names))]
  scene_factors = {
      "shape": pick(SHAPES),
      "sprite_color": pick(SPRITE_COLORS),
      "size": pick(SIZES),
      "background_color": pick(BACKGROUND_COLORS),
      "texture": pick(TEXTURES),
      "tint": pick(TINTS),
  }
  level_of = lambda framing: radius_level(scene_factors["size"], framing)
  continuous = (max_shots >= 2 and max_frames >= 2
                and rng.random() < P_CONTINUOUS)
  shots = []
  if continuous:
    num_shots = int(rng.integers(2, max_shots + 1))
    framing = pick(FRAMINGS)
    level = level_of(framing)
    lo, hi = _center_range(level, size)
    position = rng.integers(lo, hi + 1, size=2)
    for k in range(num_shots):
      num_frames = int(rng.integers(2, max_frames + 1))
      speed = _shot_speed(level, size, num_frames + 1)
      first = 0 if k == 0 else 1   # segment k+1 starts one step after k ends
      options = [a for a in ACTIONS if _feasible(
          _track(position, a, speed, num_frames, first), level, size)]
      action = options[rng.integers(len(options))]
      track = _track(position, action, speed, num_frames, first)
      shots.append(_make_shot(scene_factors, framing, action, track, False,
                              level, size))
      position = track[-1]
  else:
    num_shots = int(rng.integers(1, max_shots + 1))
    for _ in range(num_shots):
      image = max_frames == 1 or rng.random() < P_IMAGE
      num_frames = 1 if image else int(rng.integers(2, max_frames + 1))
      framing, action, track = _cut_shot(rng, level_of, num_frames, size)
      shots.append(_make_shot(scene_factors, framing, action, track, True,
                              level_of(framing), size))
  return Scene(scene_id=f"synthetic-{seed:08d}",
               global_prompt=global_prompt(scene_factors), shots=shots,
               continuous=continuous)
