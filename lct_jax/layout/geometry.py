"""Static scene geometry: how many token slots a batch holds and who owns them.

Every batch is padded to the same static shapes (`max_shots`, `max_text_len`,
one latent grid per config), so the slot -> group mapping is fixed at trace
time and lives in numpy. Only validity (text lengths, frames per shot, padded
shots) varies per example; see `layout.py`.

Token order of the joint sequence (what attention sees):
  [video slots ; text slots]        (diffusers HunyuanVideo order)
  video slots: (optional global dummy block,) shot 1, ..., shot N  (T tokens each)
  text slots:  group 0 (global prompt), group 1, ..., group N      (L tokens each)
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class SceneGeometry:
  """Static shapes of a scene batch, in latent units unless said otherwise."""
  max_shots: int            # N: shot slots per scene (groups 1..N)
  max_text_len: int         # L: text slots per group (global prompt and shots)
  frames: int               # F: latent frames per shot slot
  height: int               # H: latent height
  width: int                # W: latent width
  channels: int             # C: latent channels
  patch_t: int = 1          # pt
  patch: int = 2            # p (square spatial patch)
  # [choice] The global group's dummy video block is positional only by
  # default; with this flag it also holds real (zero, clean) video tokens,
  # stored as one more video slot of which only frame 0 is valid.
  global_dummy_tokens: bool = False

  def __post_init__(self):
    for name in ("max_shots", "max_text_len", "frames", "height", "width",
                 "channels", "patch_t", "patch"):
      value = getattr(self, name)
      if not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"scene.{name} must be a positive int, got {value!r}")
    for name, patch, kind in (("frames", "patch_t", "temporal"),
                              ("height", "patch", "spatial"),
                              ("width", "patch", "spatial")):
      size, p = getattr(self, name), getattr(self, patch)
      if size % p:
        raise ValueError(f"scene.{name}={size} is not divisible by the {kind} "
                         f"patch size {patch}={p}")

  def with_shots(self, n: int) -> "SceneGeometry":
    """This geometry with n shot slots. n = 0 (the global prompt alone, the
    first forward of a KV cache) is allowed here only: a scene batch always
    has a shot slot, so the constructor refuses it."""
    geom = dataclasses.replace(self, max_shots=max(int(n), 1))
    object.__setattr__(geom, "max_shots", int(n))   # frozen: set past the check
    return geom

  @classmethod
  def from_config(cls, config) -> "SceneGeometry":
    s, m = config.scene, config.model
    return cls(max_shots=s.max_shots, max_text_len=s.max_text_len,
               frames=s.frames, height=s.height, width=s.width,
               channels=m.in_channels, patch_t=m.patch_t, patch=m.patch,
               global_dummy_tokens=s.global_dummy_tokens)

  # --- patched grid ---------------------------------------------------------
  @property
  def grid(self) -> tuple[int, int, int]:
    """(F', H', W'): the token grid of one shot slot."""
    return (self.frames // self.patch_t, self.height // self.patch,
            self.width // self.patch)

  @property
  def tokens_per_slot(self) -> int:
    return math.prod(self.grid)

  @property
  def num_groups(self) -> int:
    """G = 1 + N: the global prompt group and the shots."""
    return 1 + self.max_shots

  @property
  def video_slot_groups(self) -> np.ndarray:
    """Group id of each video slot: [1..N], or [0..N] with dummy tokens."""
    first = 0 if self.global_dummy_tokens else 1
    return np.arange(first, self.num_groups, dtype=np.int32)

  @property
  def num_video_slots(self) -> int:
    return len(self.video_slot_groups)

  @property
  def video_len(self) -> int:
    return self.num_video_slots * self.tokens_per_slot

  @property
  def text_len(self) -> int:
    return self.num_groups * self.max_text_len

  @property
  def seq_len(self) -> int:
    return self.video_len + self.text_len

  @property
  def patch_dim(self) -> int:
    return self.channels * self.patch_t * self.patch * self.patch

  def token_groups(self) -> np.ndarray:
    """int32 [S]: the group id of every position of the joint sequence."""
    video = np.repeat(self.video_slot_groups, self.tokens_per_slot)
    text = np.repeat(np.arange(self.num_groups, dtype=np.int32),
                     self.max_text_len)
    return np.concatenate([video, text]).astype(np.int32)
