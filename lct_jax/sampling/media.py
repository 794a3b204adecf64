"""Writing samples: MP4 (PyAV), GIF and PNG (numpy + zlib, no Pillow).

Frames are uint8 RGB [F, H, W, 3]. `to_frames` turns sampled latents into
frames: pixel-space models (3 channels, the demo) map [-1, 1] to [0, 255];
other latents show their first three channels min-max scaled, for a look
only, unless a VAE decodes them (`decode.vae_decoder`, sample.py --vae).
Small frames are enlarged by an integer nearest-neighbour factor so that the
videos are watchable and have even sizes (H.264 needs them).
"""
from __future__ import annotations

import struct
import zlib

import numpy as np


def to_frames(latents_FxHxWxC: np.ndarray, num_frames: int) -> np.ndarray:
  x = np.asarray(latents_FxHxWxC, np.float32)[:num_frames]
  if x.shape[-1] == 3:
    return np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)
  x = x[..., :3]
  if x.shape[-1] < 3:
    x = np.concatenate([x] + [x[..., :1]] * (3 - x.shape[-1]), axis=-1)
  lo, hi = x.min(), x.max()
  return np.round((x - lo) / max(hi - lo, 1e-6) * 255).astype(np.uint8)


def enlarge(frames: np.ndarray, min_side: int = 128) -> np.ndarray:
  k = max(1, -(-min_side // min(frames.shape[1:3])))
  k += k % 2 if (frames.shape[1] * k) % 2 or (frames.shape[2] * k) % 2 else 0
  return frames.repeat(k, axis=1).repeat(k, axis=2)


def contact_sheet(shots: list[np.ndarray], gap: int = 2) -> np.ndarray:
  """One row per shot, its frames left to right (as in the paper's
  figures); rows padded to the longest shot. -> uint8 [H', W', 3]."""
  h, w = shots[0].shape[1:3]
  cols = max(len(s) for s in shots)
  sheet = np.full((len(shots) * (h + gap) - gap, cols * (w + gap) - gap, 3),
                  255, np.uint8)
  for r, shot in enumerate(shots):
    for c, frame in enumerate(shot):
      sheet[r * (h + gap):r * (h + gap) + h,
            c * (w + gap):c * (w + gap) + w] = frame
  return sheet


def write_png(path: str, image_HxWx3: np.ndarray) -> None:
  img = np.ascontiguousarray(image_HxWx3, np.uint8)
  h, w = img.shape[:2]
  raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))

  def chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
  with open(path, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


# GIF: a fixed 6x7x6 colour cube (252 colours), and LZW with a clear code
# before the table would grow past 9-bit codes: larger files than real LZW,
# but a few lines and exact to decode.
_LEVELS = (6, 7, 6)


def _palette() -> np.ndarray:
  r, g, b = np.meshgrid(*[np.round(np.linspace(0, 255, n)) for n in _LEVELS],
                        indexing="ij")
  pal = np.stack([r, g, b], -1).reshape(-1, 3).astype(np.uint8)
  return np.concatenate([pal, np.zeros((256 - len(pal), 3), np.uint8)])


def _quantise(frame: np.ndarray) -> np.ndarray:
  idx = [np.round(frame[..., i].astype(np.float32) / 255 * (n - 1)).astype(
      np.int32) for i, n in enumerate(_LEVELS)]
  return ((idx[0] * _LEVELS[1] + idx[1]) * _LEVELS[2] + idx[2]).astype(
      np.uint8)


def _lzw(indices: np.ndarray) -> bytes:
  clear, end, width = 256, 257, 9
  codes, bits, nbits = [], 0, 0
  out = bytearray()
  run = 256 - 2            # literals between clears: codes stay 9 bits wide
  flat = indices.ravel().tolist()
  codes.append(clear)
  for i, v in enumerate(flat):
    if i and i % run == 0:
      codes.append(clear)
    codes.append(v)
  codes.append(end)
  for code in codes:
    bits |= code << nbits
    nbits += width
    while nbits >= 8:
      out.append(bits & 0xFF)
      bits >>= 8
      nbits -= 8
  if nbits:
    out.append(bits & 0xFF)
  blocks = bytearray()
  for i in range(0, len(out), 255):
    blk = out[i:i + 255]
    blocks += bytes([len(blk)]) + blk
  return bytes([8]) + bytes(blocks) + b"\x00"


def write_gif(path: str, frames: np.ndarray, fps: int = 4) -> None:
  h, w = frames.shape[1:3]
  delay = max(1, round(100 / fps))
  data = bytearray(b"GIF89a" + struct.pack("<HHBBB", w, h, 0xF7, 0, 0))
  data += _palette().tobytes()
  data += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"     # loop forever
  for frame in frames:
    data += b"\x21\xf9\x04\x00" + struct.pack("<H", delay) + b"\x00\x00"
    data += b"\x2c" + struct.pack("<HHHHB", 0, 0, w, h, 0)
    data += _lzw(_quantise(frame))
  data += b"\x3b"
  with open(path, "wb") as fh:
    fh.write(bytes(data))


def write_mp4(path: str, frames: np.ndarray, fps: int = 4) -> bool:
  """H.264 (yuv420p) via PyAV; False (nothing written) without PyAV."""
  try:
    from lct_jax.data import folder  # pylint: disable=g-import-not-at-top
  except ImportError:   # lazy: folder.py needs PyAV, an optional extra
    return False
  folder.write_video(path, frames, fps, lossless=False)
  return True
