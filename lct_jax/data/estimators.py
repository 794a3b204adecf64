"""Reading one synthetic shot's hidden factors back from its pixels, or
saying that the shot is not what the generator draws.

`estimate_shot` recovers every factor of one shot from its frames alone,
so generated shots are judged exactly like ground truth. Each estimate
comes with the evidence behind it, and a factor whose evidence is too
weak is UNKNOWN: noise, blank frames, shuffled patches or a background
without a sprite are *not recognised*, instead of falling back to a
default that would agree with other defaults.

Pipeline per shot (the estimators lean on how `synthetic` draws; see its
docstring):
  1. the border ring (no sprite by construction) gives the background: the
     texture whose known brightness map fits the ring best, its base colour
     (a least-squares fit, so noise averages out) and the fit's RMS
     residual;
  2. pixels far from that background seed the sprite colour; each pixel then
     goes to the nearer of the two colour models, and a neighbour-count
     clean-up drops stray noise pixels; the sprite's colour is the median of
     the mask's interior (a soft edge is the template's to judge);
  3. background and sprite colours decode jointly with the tint (a
     per-channel multiplier moves both): the tint that explains both best
     wins; the distance of each colour to its palette entry under that tint
     is the colour evidence;
  4. each frame's sprite mask is matched against rasterised templates of
     every (shape, radius level); the best IoU is the shape evidence, and
     the level gives size and framing;
  5. the centroid track gives the action; its deviation from a straight
     track at constant speed is the motion evidence. A single image has
     action "still" (motion is unobservable; the generator gives image
     shots the "still" action).

Recognition thresholds (`Thresholds`) were calibrated on ground truth under
Gaussian pixel noise (`python benchmarks/consistency_calibration.py` prints
the evidence distributions; BENCHMARKS.md has the table): at sigma 8 on
0..255, 781 of 782 shots are recognised, with ring residuals up to 8.5,
colour distances up to 2.1 (background) and p99 7.8 (sprite; one shot's
11.7), template IoUs >= 0.99 and track errors <= 0.03 px, while noise,
blank frames, shuffled patches and sprite-free backgrounds miss at least
one threshold (<= 0.5% recognised).
Ground truth under a 0.5 px Gaussian blur (`counterfeits.soft_edges`: a
sprite drawn with soft edges, as a generator draws it) is recognised with
every factor right as well: the colour is read from the mask's interior,
not its rim.
"""
from __future__ import annotations

import collections
import dataclasses
import functools

import numpy as np

from lct_jax.data import synthetic as syn

UNKNOWN = "unknown"
SEED_DISTANCE = 30.0       # surely-sprite pixels: this far from background
# Pixels: fewer, and a sprite's colour is its whole mask's (`_sprite_masks`).
# Small, because the rim of a softly drawn sprite is a sprite/background mix:
# at 24 (until 2026-12-07) a 3 px sprite under a 0.5 px blur, which a person
# cannot tell from the original, had its colour taken from a mask that is
# mostly rim and failed in 45% of shots; at 4 none does, and the median of
# >= 4 interior pixels under sigma-8 noise stays far inside the threshold.
MIN_INTERIOR = 4
IDENTITY = ("shape", "sprite_color", "size")
ENVIRONMENT = ("background_color", "texture", "tint")
ALL_FACTORS = syn.SCENE_FACTORS + syn.SHOT_FACTORS


@dataclasses.dataclass(frozen=True)
class Thresholds:
  """Past these, a factor is UNKNOWN (module docstring: calibration)."""
  # RMS residual (0..255 units, per channel) of the ring's background fit.
  # Noise sigma s alone gives ~s; a wrong texture leaves >= ~13 (the
  # texture's +-12% swing of a base >= 40).
  max_background_residual: float = 12.0
  # Distance (RGB units) of a decoded colour to its palette entry under the
  # decoded tint. Palette entries are >= 22 apart: half of that is the most
  # a colour can be off and still be nearer its own entry than any other.
  max_colour_distance: float = 11.0
  # Best template IoU of every frame's sprite mask.
  min_template_iou: float = 0.6
  # RMS deviation (pixels) of the centroid track from a straight track at
  # constant speed along the decoded action's axis.
  max_track_error: float = 1.0


DEFAULT_THRESHOLDS = Thresholds()

# Each evidence key -> (the Thresholds field that bounds it, True when the
# evidence must be at most that bound, False when at least).
EVIDENCE_BOUNDS = {
    "background_residual": ("max_background_residual", True),
    "background_distance": ("max_colour_distance", True),
    "sprite_distance": ("max_colour_distance", True),
    "template_iou": ("min_template_iou", False),
    "track_error": ("max_track_error", True),
}


@dataclasses.dataclass
class ShotEstimate:
  factors: dict         # ALL_FACTORS -> name or UNKNOWN
  evidence: dict        # what each decision rests on (floats; NaN: absent)
  # The sprite's mask centroid (y, x) per frame, where its shape matched a
  # template (else None): where the sprite is, for track continuation.
  centroids_Fx2: np.ndarray | None = None

  @property
  def recognised(self) -> bool:
    """Identity and environment all known: the shot is a synthetic scene's
    shot (framing and action are judged against prompts separately)."""
    return all(self.factors[f] != UNKNOWN for f in IDENTITY + ENVIRONMENT)


def check_frames(frames_FxHxWx3) -> np.ndarray:
  """The estimators' input contract: uint8 [F, S, S, 3], S >= 16."""
  frames = np.asarray(frames_FxHxWx3)
  if frames.dtype != np.uint8:
    raise ValueError(f"expected uint8 pixels (0..255), got dtype "
                     f"{frames.dtype}; convert with "
                     "lct_jax.sampling.media.to_frames")
  if (frames.ndim != 4 or frames.shape[0] < 1 or frames.shape[-1] != 3
      or frames.shape[1] != frames.shape[2] or frames.shape[1] < 16):
    raise ValueError(f"expected square RGB frames [F, S, S, 3] with F >= 1 "
                     f"and S >= 16, got shape {frames.shape}")
  return frames


def _ring(size: int) -> np.ndarray:
  m = syn.margin_for(size)
  ring = np.ones((size, size), bool)
  ring[m:-m, m:-m] = False
  return ring


def _fit_background(frames_FxHxWx3: np.ndarray):
  """-> (texture, base colour [3], RMS residual) fitted to the border ring.

  Each texture is a known brightness map (the camera never moves), so the
  one whose least-squares fit leaves the smallest residual wins.
  """
  size = frames_FxHxWx3.shape[1]
  ring = _ring(size)
  ring_Px3 = frames_FxHxWx3[:, ring].reshape(-1, 3)
  best = None
  for texture in syn.TEXTURES:
    gain_P = np.tile(syn.texture_map(texture, size)[ring],
                     len(frames_FxHxWx3))
    base = (gain_P @ ring_Px3) / (gain_P @ gain_P)
    residual = np.mean((ring_Px3 - gain_P[:, None] * base)**2)
    if best is None or residual < best[0]:
      best = (residual, texture, base)
  return best[1], best[2], float(np.sqrt(best[0]))


def _clean(mask_HxW: np.ndarray) -> np.ndarray:
  """Drops pixels with < 2 of 8 neighbours set and fills pixels with >= 6:
  stray noise pixels would otherwise wreck the template crop."""
  padded = np.pad(mask_HxW, 1).astype(np.int32)
  h, w = mask_HxW.shape
  count = sum(padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
              for dy in (-1, 0, 1) for dx in (-1, 0, 1)
              if (dy, dx) != (0, 0))
  return np.where(mask_HxW, count >= 2, count >= 6)


def _palette_under(palette: dict, tint: str) -> tuple[list, np.ndarray]:
  names = list(palette)
  colours = np.asarray([palette[n] for n in names], float)
  return names, colours * np.asarray(syn.TINTS[tint])


def _decode_colours(background_rgb, sprite_rgb=None):
  """-> (background, sprite or None, tint, d_background, d_sprite or NaN).

  Decoded jointly: the tint that explains both colours best wins; without
  a sprite, the background alone decides (every (colour, tint) pair is
  >= 22 units from every other, so it can).
  """
  best = None
  for tint in syn.TINTS:
    bg_names, bg_rgb = _palette_under(syn.BACKGROUND_COLORS, tint)
    d_bg = np.linalg.norm(bg_rgb - background_rgb, axis=-1)
    cost, sprite, d_sp = d_bg.min(), None, float("nan")
    if sprite_rgb is not None:
      sp_names, sp_rgb = _palette_under(syn.SPRITE_COLORS, tint)
      d_all = np.linalg.norm(sp_rgb - sprite_rgb, axis=-1)
      sprite, d_sp = sp_names[d_all.argmin()], float(d_all.min())
      cost = cost + d_sp
    if best is None or cost < best[0]:
      best = (cost, bg_names[d_bg.argmin()], sprite, tint, float(d_bg.min()),
              d_sp)
  return best[1:]


def _crop(mask_HxW: np.ndarray) -> np.ndarray:
  ys, xs = np.nonzero(mask_HxW)
  return mask_HxW[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


@functools.lru_cache(maxsize=8)
def _templates(size: int) -> tuple:
  """((shape, level, cropped mask), ...) for every shape and radius level."""
  center = (size // 2, size // 2)
  return tuple((shape, level, _crop(_clean(syn.shape_mask(
      shape, syn.radius(level, size), center, size))))
               for shape in syn.SHAPES for level in range(len(syn.RADII)))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
  """IoU of two crops aligned at their top-left corners."""
  h, w = max(a.shape[0], b.shape[0]), max(a.shape[1], b.shape[1])
  pa = np.zeros((h, w), bool)
  pb = np.zeros((h, w), bool)
  pa[:a.shape[0], :a.shape[1]] = a
  pb[:b.shape[0], :b.shape[1]] = b
  return (pa & pb).sum() / (pa | pb).sum()


def _match_template(mask_HxW: np.ndarray) -> tuple[float, str, int]:
  """-> (best IoU, shape, level) of one frame's sprite mask."""
  crop = _crop(mask_HxW)
  return max(((_iou(crop, t), shape, level)
              for shape, level, t in _templates(mask_HxW.shape[0])),
             key=lambda s: s[0])


def _action(centroids_Fx2: np.ndarray) -> tuple[str, float]:
  """-> (action, RMS track error in pixels).

  The action is the dominant direction of the net displacement ('still'
  below 1/2 px per step: the generator moves >= 1 px per step). The error
  is the RMS distance of the centroids from the straight, constant-speed
  track that action implies (from the first to the last centroid along its
  axis, fixed on the other axis), so a sprite that jumps about is not a
  'move'.
  """
  steps = len(centroids_Fx2) - 1
  if steps < 1:
    return "still", 0.0
  dy, dx = centroids_Fx2[-1] - centroids_Fx2[0]
  if max(abs(dy), abs(dx)) < 0.5 * steps:
    action = "still"
  elif abs(dx) >= abs(dy):
    action = "right" if dx > 0 else "left"
  else:
    action = "down" if dy > 0 else "up"
  axis = None if action == "still" else (1 if action in ("left", "right")
                                         else 0)
  k = np.arange(steps + 1) / steps
  ideal_Fx2 = np.empty_like(centroids_Fx2)
  for a in (0, 1):
    c = centroids_Fx2[:, a]
    if a == axis:
      ideal_Fx2[:, a] = c[0] + k * (c[-1] - c[0])
    else:
      ideal_Fx2[:, a] = c.mean()
  error = np.sqrt(np.mean(np.sum((centroids_Fx2 - ideal_Fx2)**2, axis=-1)))
  return action, float(error)


def _majority(values):
  return collections.Counter(values).most_common(1)[0][0]


def _interior(mask_HxW: np.ndarray) -> np.ndarray:
  """The mask less its rim: pixels whose 4 neighbours are all set."""
  p = np.pad(mask_HxW, 1)
  return (mask_HxW & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2]
          & p[1:-1, 2:])


def _sprite_masks(frames, background_HxWx3):
  """-> (sprite colour [3], masks [F, H, W]) or None when some frame has
  no sprite.

  The colour is the median over the masks' interiors (the rim dropped):
  a sprite drawn with a soft edge mixes sprite and background in its rim,
  which would pull an all-pixel median off the palette. The edge is judged
  by the template IoU; the colour test judges the colour alone. Masks
  whose interiors hold fewer than MIN_INTERIOR pixels (the smallest
  sprites) give their colour whole: a median of a few noisy pixels would
  be noisier than the rim is biased.
  """
  to_background = np.linalg.norm(frames - background_HxWx3, axis=-1)
  seed_FxHxW = np.stack([_clean(m) for m in to_background > SEED_DISTANCE])
  if not seed_FxHxW.any(axis=(1, 2)).all():
    return None
  sprite_rgb = np.median(frames[seed_FxHxW], axis=0)
  # Nearest colour model per pixel: sprite vs this pixel's background.
  to_sprite = np.linalg.norm(frames - sprite_rgb, axis=-1)
  sprite_FxHxW = np.stack([_clean(m) for m in to_sprite < to_background])
  if not sprite_FxHxW.any(axis=(1, 2)).all():
    return None
  inside_FxHxW = np.stack([_interior(m) for m in sprite_FxHxW])
  colour_FxHxW = (inside_FxHxW if inside_FxHxW.sum() >= MIN_INTERIOR
                  else sprite_FxHxW)
  return np.median(frames[colour_FxHxW], axis=0), sprite_FxHxW


def estimate_shot(frames_FxHxWx3, thresholds: Thresholds = DEFAULT_THRESHOLDS
                  ) -> ShotEstimate:
  """Every synthetic factor of one shot, from uint8 pixels [F, S, S, 3],
  each UNKNOWN where its evidence misses the thresholds."""
  frames = check_frames(frames_FxHxWx3).astype(np.float32)
  size = frames.shape[1]
  texture, base, residual = _fit_background(frames)
  background_HxWx3 = syn.texture_map(texture, size)[..., None] * base
  sprite = _sprite_masks(frames, background_HxWx3)
  factors = {k: UNKNOWN for k in ALL_FACTORS}
  evidence = dict(background_residual=residual, background_distance=np.nan,
                  sprite_distance=np.nan, template_iou=np.nan,
                  track_error=np.nan)
  th = thresholds
  environment_ok = residual <= th.max_background_residual
  background, sprite_color, tint, d_bg, d_sp = _decode_colours(
      base, None if sprite is None else sprite[0])
  evidence.update(background_distance=d_bg, sprite_distance=d_sp)
  # Texture and colour only mean something together: a flat frame of a
  # colour the generator never paints is not a "plain" background.
  if environment_ok and d_bg <= th.max_colour_distance:
    factors["texture"] = texture
    factors["background_color"] = background
    # The tint moves both colours: a sprite colour that fits no palette
    # entry under it leaves the tint in doubt.
    if sprite is None or d_sp <= th.max_colour_distance:
      factors["tint"] = tint
  if sprite is None:
    return ShotEstimate(factors, evidence)
  _, masks_FxHxW = sprite
  if environment_ok and d_sp <= th.max_colour_distance:
    factors["sprite_color"] = sprite_color
  matches = [_match_template(m) for m in masks_FxHxW]
  shape, level = _majority([(s, lv) for _, s, lv in matches])
  # The worst frame decides, and every frame must show the same template:
  # one sprite, one size, one framing per shot.
  iou = min(i if (s, lv) == (shape, level) else 0.0 for i, s, lv in matches)
  evidence["template_iou"] = iou
  if iou < th.min_template_iou:
    return ShotEstimate(factors, evidence)
  factors.update(shape=shape, size=syn.SIZES[level % 2],
                 framing=syn.FRAMINGS[level // 2])
  centroids = np.asarray([np.argwhere(m).mean(0) for m in masks_FxHxW])
  action, track_error = _action(centroids)
  evidence["track_error"] = track_error
  if track_error <= th.max_track_error:
    factors["action"] = action
  return ShotEstimate(factors, evidence, centroids)


def evidence_summary(estimates, thresholds: Thresholds = DEFAULT_THRESHOLDS
                     ) -> dict:
  """Per evidence key over many shots: its median (over shots that have it)
  and the fraction of all shots within its threshold (absent evidence, e.g.
  no sprite found, is outside). Says which test a generator fails."""
  out = {}
  for key, (field, at_most) in EVIDENCE_BOUNDS.items():
    v = np.asarray([e.evidence[key] for e in estimates], float)
    bound = getattr(thresholds, field)
    ok = np.where(np.isnan(v), False, v <= bound if at_most else v >= bound)
    out[key] = dict(median=float(np.nanmedian(v)) if (~np.isnan(v)).any()
                    else float("nan"),
                    threshold=bound, at_most=at_most,
                    within=float(ok.mean()) if len(v) else float("nan"))
  return out


def estimate_factors(frames_FxHxWx3) -> dict:
  """The factors of `estimate_shot` (names, or UNKNOWN)."""
  return estimate_shot(frames_FxHxWx3).factors
