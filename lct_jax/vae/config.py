"""`VAEConfig`: diffusers' `AutoencoderKLHunyuanVideo` config.json, checked.

Field names and defaults are diffusers' `__init__` arguments (0.32-0.42), so
a `config.json` maps field for field. A missing field means diffusers'
default, as in diffusers; an unknown field, or a value this port does not
implement (another `act_fn`, block type, temporal ratio), is a ValueError
naming it, never silently ignored: a config diffusers would build
differently must not load here.

The compression the blocks actually apply is derived from the block list as
diffusers derives it, and may be less than the declared ratios: block i
downsamples space if i < log2(spatial_compression_ratio), and time (with
ratio 4) if i >= n_blocks - 3 and it is not the last block. With the real
4-block config both equal the declared 8 and 4; a 2-block config declared
(8, 4) compresses (4, 2). `spatial_factor` / `temporal_factor` are the
applied ones; the input checks use them (diffusers' tiling uses the declared
ratios, so the tiled paths refuse a config where the two differ).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

CLASS_NAME = "AutoencoderKLHunyuanVideo"
DOWN_BLOCK = "HunyuanVideoDownBlock3D"
UP_BLOCK = "HunyuanVideoUpBlock3D"
SUPPORTED_ACT_FNS = ("silu", "swish")     # diffusers: both are nn.SiLU
SUPPORTED_TEMPORAL_RATIOS = (4,)          # diffusers' decoder raises on others
RESNET_EPS = 1e-6                         # diffusers hard-codes it everywhere
LOGVAR_RANGE = (-30.0, 20.0)              # DiagonalGaussianDistribution's clamp


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  """The architecture of one HunyuanVideo VAE (diffusers' field names)."""
  in_channels: int = 3
  out_channels: int = 3
  latent_channels: int = 16
  down_block_types: tuple[str, ...] = (DOWN_BLOCK,) * 4
  up_block_types: tuple[str, ...] = (UP_BLOCK,) * 4
  block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
  layers_per_block: int = 2
  act_fn: str = "silu"
  norm_num_groups: int = 32
  scaling_factor: float = 0.476986
  spatial_compression_ratio: int = 8
  temporal_compression_ratio: int = 4
  mid_block_add_attention: bool = True

  def __post_init__(self):
    for name in ("down_block_types", "up_block_types", "block_out_channels"):
      object.__setattr__(self, name, tuple(getattr(self, name)))
    _validate(self)

  # --- diffusers config.json -------------------------------------------------
  @classmethod
  def from_diffusers(cls, dconf: Mapping[str, Any]) -> VAEConfig:
    """A diffusers `config.json` dict -> VAEConfig (keys starting with '_'
    other than `_class_name` are bookkeeping and ignored)."""
    class_name = dconf.get("_class_name", CLASS_NAME)
    if class_name != CLASS_NAME:
      raise ValueError(f"config.json describes a {class_name!r}; only "
                       f"{CLASS_NAME!r} converts")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(k for k in dconf if not k.startswith("_")
                     and k not in known)
    if unknown:
      raise ValueError(f"VAE config.json has fields this port does not "
                       f"know: {unknown}; known: {sorted(known)}")
    return cls(**{k: v for k, v in dconf.items() if k in known})

  def to_diffusers(self) -> dict[str, Any]:
    """The `config.json` dict diffusers' `from_pretrained` reads."""
    d = dataclasses.asdict(self)
    for name in ("down_block_types", "up_block_types", "block_out_channels"):
      d[name] = list(d[name])
    return {"_class_name": CLASS_NAME, **d}

  # --- what the blocks do ---------------------------------------------------
  @property
  def down_strides(self) -> tuple[tuple[int, int, int] | None, ...]:
    """Per encoder block, its downsampler's (t, h, w) stride, or None."""
    return tuple(_resample(self, i) for i in range(len(
        self.block_out_channels)))

  @property
  def up_factors(self) -> tuple[tuple[int, int, int] | None, ...]:
    """Per decoder block, its upsampler's (t, h, w) factor, or None (the
    mirror image of `down_strides`, as diffusers builds it)."""
    return self.down_strides

  @property
  def spatial_factor(self) -> int:
    """Pixels per latent along height and width (as the blocks apply it)."""
    return math.prod(s[1] for s in self.down_strides if s)

  @property
  def temporal_factor(self) -> int:
    """Frames per latent frame after the first: F = 1 + factor * (f - 1)."""
    return math.prod(s[0] for s in self.down_strides if s)

  @property
  def factors_as_declared(self) -> bool:
    """Whether the applied compression equals the declared ratios (true of
    the real model; diffusers' tiling assumes it)."""
    return (self.spatial_factor == self.spatial_compression_ratio and
            self.temporal_factor == self.temporal_compression_ratio)


  # --- shapes ---------------------------------------------------------------
  def check_video(self, shape) -> None:
    """Raises ValueError unless `shape` is a video this VAE encodes:
    [B, 1 + temporal_factor * k, H, W, in_channels], H and W multiples of
    `spatial_factor` (the causal temporal downsampling keeps the first
    frame on its own; other frame counts would not decode back)."""
    shape = tuple(shape)
    if len(shape) != 5:
      raise ValueError(f"video shape {shape}: expected [B, F, H, W, C] "
                       "(channels last)")
    _, f, h, w, ch = shape
    tf, sf = self.temporal_factor, self.spatial_factor
    if f < 1 or (f - 1) % tf:
      near = 1 + tf * max(0, (f - 1) // tf)
      raise ValueError(f"video shape {shape}: {f} frames is not 1 + {tf} k "
                       f"(temporal compression {tf}; e.g. {near})")
    if h % sf or w % sf or h < sf or w < sf:
      raise ValueError(f"video shape {shape}: height {h} and width {w} must "
                       f"be positive multiples of {sf} (spatial "
                       "compression)")
    if ch != self.in_channels:
      raise ValueError(f"video shape {shape}: {ch} channels, the VAE takes "
                       f"{self.in_channels} (channels last)")

  def check_latents(self, shape) -> None:
    """Raises ValueError unless `shape` is [B, f, h, w, latent_channels]."""
    shape = tuple(shape)
    if len(shape) != 5 or min(shape[:4]) < 1:
      raise ValueError(f"latent shape {shape}: expected [B, f, h, w, C] "
                       "(channels last), every size positive")
    if shape[-1] != self.latent_channels:
      raise ValueError(f"latent shape {shape}: {shape[-1]} channels, the "
                       f"VAE has {self.latent_channels} (channels last)")

  def latent_shape(self, video_shape) -> tuple[int, int, int, int, int]:
    """[B, F, H, W, C] -> [B, 1 + (F - 1) / tf, H / sf, W / sf, L]."""
    self.check_video(video_shape)
    b, f, h, w, _ = video_shape
    sf, tf = self.spatial_factor, self.temporal_factor
    return (b, 1 + (f - 1) // tf, h // sf, w // sf, self.latent_channels)

  def video_shape(self, latent_shape) -> tuple[int, int, int, int, int]:
    """[B, f, h, w, L] -> [B, 1 + tf (f - 1), h sf, w sf, out_channels]."""
    self.check_latents(latent_shape)
    b, f, h, w, _ = latent_shape
    sf, tf = self.spatial_factor, self.temporal_factor
    return (b, 1 + tf * (f - 1), h * sf, w * sf, self.out_channels)


def _resample(c: VAEConfig, i: int) -> tuple[int, int, int] | None:
  """diffusers' add_spatial_downsample / add_time_downsample of block i
  (temporal ratio 4; the encoder's and decoder's rules are the same)."""
  n = len(c.block_out_channels)
  n_space = int(math.log2(c.spatial_compression_ratio))
  n_time = int(math.log2(c.temporal_compression_ratio))
  space = i < n_space
  time = i >= n - 1 - n_time and i != n - 1
  if not (space or time):
    return None
  return (2 if time else 1, 2 if space else 1, 2 if space else 1)


def _validate(c: VAEConfig) -> None:
  if c.act_fn not in SUPPORTED_ACT_FNS:
    raise ValueError(f"act_fn={c.act_fn!r} is not supported; supported: "
                     f"{list(SUPPORTED_ACT_FNS)}")
  n = len(c.block_out_channels)
  if n < 1:
    raise ValueError("block_out_channels is empty")
  for name, want in (("down_block_types", DOWN_BLOCK),
                     ("up_block_types", UP_BLOCK)):
    types = getattr(c, name)
    bad = [t for t in types if t != want]
    if bad:
      raise ValueError(f"{name} has {bad[0]!r}; supported: [{want!r}]")
    if len(types) != n:
      raise ValueError(f"{name} has {len(types)} entries but "
                       f"block_out_channels has {n}")
  if c.temporal_compression_ratio not in SUPPORTED_TEMPORAL_RATIOS:
    raise ValueError(
        f"temporal_compression_ratio={c.temporal_compression_ratio} is not "
        f"supported; supported: {list(SUPPORTED_TEMPORAL_RATIOS)} (diffusers' "
        "decoder builds no other)")
  r = c.spatial_compression_ratio
  if not (isinstance(r, int) and r >= 1 and r & (r - 1) == 0):
    raise ValueError(f"spatial_compression_ratio={r!r} is not supported; "
                     "supported: a power of 2")
  for name in ("in_channels", "out_channels", "latent_channels",
               "layers_per_block", "norm_num_groups"):
    v = getattr(c, name)
    if not (isinstance(v, int) and v >= 1):
      raise ValueError(f"{name}={v!r} must be a positive integer")
  bad = [ch for ch in c.block_out_channels
         if not isinstance(ch, int) or ch < 1 or ch % c.norm_num_groups]
  if bad:
    raise ValueError(f"block_out_channels={list(c.block_out_channels)}: "
                     f"{bad[0]!r} is not a positive multiple of "
                     f"norm_num_groups={c.norm_num_groups}")
  if not isinstance(c.mid_block_add_attention, bool):
    raise ValueError(f"mid_block_add_attention="
                     f"{c.mid_block_add_attention!r} must be a bool")
