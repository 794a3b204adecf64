"""Tiled and frame-sliced encode / decode: diffusers' algorithm, bounded memory.

A 480 x 848 x 193-frame clip does not fit the VAE in one piece (the
full-resolution activations of the decoder's last block alone are
193 x 480 x 848 x 128 floats, 40 GB in float32). diffusers splits it and
blends the seams; this is the same split and the same blend, so the result
equals diffusers' `vae.encode` / `vae.decode` after `vae.enable_tiling(...)`
with the same `Tiling` values (tests/test_vae_parity.py):

  frames   if use_framewise_* and there are more than tile_sample_min_num_frames
           (latent: that / 4), causal chunks of min + 1 frames every stride
           frames; each chunk's first latent frame (a re-encoded "first
           frame") is dropped after the first chunk, and consecutive chunks
           are cross-faded over (min - stride) frames (`blend_t`);
  space    if use_tiling and H or W exceed tile_sample_min_*, tiles of
           min x min every stride pixels (stride / 8 latents), each row
           cross-faded into the one above (`blend_v`) and each tile into its
           left neighbour (`blend_h`) over (min - stride), then cropped to
           stride. As in diffusers, a tile blends with its neighbours'
           already-blended values (diffusers blends in place).

Defaults are diffusers' (256 / 192 pixels, 16 / 12 frames) with spatial
tiling on (diffusers' `enable_tiling()`; its default object has it off).
Encoding blends the raw moments and clamps logvar after, as diffusers does.

Each tile runs one jitted function (`sharding.bind`, optionally
batch-sharded over a mesh) and comes back to the host, where the blending
and stitching run in numpy (float32, rounded as torch rounds): device
memory is one tile's activations, and the result is a host array. Edge
tiles are smaller (e.g. 96 and 80 pixels at 480 x 848) and cannot be
padded without changing the result (group-norm statistics span the tile),
so there is one compilation per distinct tile shape: 8 for the 480p clip
(2 heights x 2 widths x 2 chunk lengths; `tile_shapes`). A last chunk of
one frame (latent), whose only output diffusers drops, is skipped.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from lct_jax.vae import sharding
from lct_jax.vae.config import LOGVAR_RANGE, VAEConfig
from lct_jax.vae.model import AutoencoderKL


@dataclasses.dataclass(frozen=True)
class Tiling:
  """diffusers' tiling attributes (`enable_tiling(...)`'s arguments), in
  sample pixels / frames."""
  use_tiling: bool = True              # spatial tiles
  use_framewise_encoding: bool = True  # temporal chunks when encoding
  use_framewise_decoding: bool = True  # temporal chunks when decoding
  tile_sample_min_height: int = 256
  tile_sample_min_width: int = 256
  tile_sample_min_num_frames: int = 16
  tile_sample_stride_height: int = 192
  tile_sample_stride_width: int = 192
  tile_sample_stride_num_frames: int = 12

  def check(self, config: VAEConfig) -> None:
    """Raises ValueError if this tiling does not fit the VAE."""
    if not config.factors_as_declared:
      raise ValueError(
          f"this config's blocks compress space by {config.spatial_factor} "
          f"and time by {config.temporal_factor}, but it declares "
          f"spatial_compression_ratio={config.spatial_compression_ratio} and "
          f"temporal_compression_ratio={config.temporal_compression_ratio}; "
          "diffusers' tiling uses the declared ratios, so it cannot be "
          "matched: encode / decode untiled")
    for dim, factor in (("height", config.spatial_factor),
                        ("width", config.spatial_factor),
                        ("num_frames", config.temporal_factor)):
      lo = getattr(self, f"tile_sample_min_{dim}")
      stride = getattr(self, f"tile_sample_stride_{dim}")
      if not (isinstance(lo, int) and isinstance(stride, int)
              and 0 < stride <= lo and lo % factor == 0
              and stride % factor == 0):
        raise ValueError(
            f"tile_sample_min_{dim}={lo!r}, tile_sample_stride_{dim}="
            f"{stride!r}: need 0 < stride <= min, both multiples of {factor} "
            "(the compression), so that tiles map to whole latents")


@dataclasses.dataclass(frozen=True)
class _Plan:
  """One direction of the tiling: tile sizes and strides in the input's
  units, blend extents and kept sizes in the output's (pixels <-> latents)."""
  framewise: bool
  spatial: bool
  tile: tuple[int, int, int]     # (frames - 1, height, width) of a tile
  step: tuple[int, int, int]     # strides
  blend: tuple[int, int, int]    # cross-fade extents of the outputs
  keep: tuple[int, int, int]     # what each output tile keeps

  def chunks(self, frames: int) -> list[tuple[int, int]]:
    """Frame ranges: diffusers' causal chunks of tile + 1 frames, minus a
    last chunk of one frame (its only output is dropped: skipping it
    changes nothing)."""
    if not self.framewise:
      return [(0, frames)]
    return [(i, min(i + self.tile[0] + 1, frames))
            for i in range(0, frames, self.step[0])
            if i == 0 or frames - i > 1]

  def grid(self, height: int, width: int) -> list[list[tuple[int, ...]]]:
    """Rows of (top, bottom, left, right) tile ranges."""
    if not self.spatial:
      return [[(0, height, 0, width)]]
    return [[(i, min(i + self.tile[1], height), j, min(j + self.tile[2],
                                                       width))
             for j in range(0, width, self.step[2])]
            for i in range(0, height, self.step[1])]


def _plan(t: Tiling, c: VAEConfig, encode: bool, shape) -> _Plan:
  """diffusers' `_encode` / `_decode` dispatch and tile geometry."""
  sf, tf = c.spatial_factor, c.temporal_factor
  sample_tile = (t.tile_sample_min_num_frames, t.tile_sample_min_height,
                 t.tile_sample_min_width)
  sample_step = (t.tile_sample_stride_num_frames, t.tile_sample_stride_height,
                 t.tile_sample_stride_width)
  factor = (tf, sf, sf)
  latent_tile = tuple(a // f for a, f in zip(sample_tile, factor))
  latent_step = tuple(a // f for a, f in zip(sample_step, factor))
  tile, step = (sample_tile, sample_step) if encode else (latent_tile,
                                                          latent_step)
  out_tile, keep = (latent_tile, latent_step) if encode else (sample_tile,
                                                              sample_step)
  framewise = (t.use_framewise_encoding if encode else
               t.use_framewise_decoding) and shape[1] > tile[0]
  spatial = t.use_tiling and (shape[2] > tile[1] or shape[3] > tile[2])
  return _Plan(framewise, spatial, tile, step,
               tuple(o - k for o, k in zip(out_tile, keep)), keep)


def _blend(a: np.ndarray, b: np.ndarray, extent: int, axis: int
           ) -> np.ndarray:
  """b with its first `extent` slices along `axis` cross-faded from a's
  last ones: diffusers' blend_v / blend_h / blend_t. Its Python-scalar
  weights rounded to float32, products and sum in float32 (in numpy, as
  torch rounds them: no fused multiply-add)."""
  extent = min(a.shape[axis], b.shape[axis], extent)
  if extent <= 0:
    return b
  y = np.arange(extent, dtype=np.float64) / extent
  shape = [1] * b.ndim
  shape[axis] = extent
  w_a = (1.0 - y).astype(np.float32).reshape(shape)
  w_b = y.astype(np.float32).reshape(shape)
  head = [slice(None)] * b.ndim
  head[axis] = slice(0, extent)
  tail = list(head)
  tail[axis] = slice(a.shape[axis] - extent, a.shape[axis])
  out = np.array(b)
  out[tuple(head)] = (a[tuple(tail)].astype(np.float32) * w_a +
                      b[tuple(head)].astype(np.float32) * w_b
                      ).astype(b.dtype)
  return out


def _stitch(rows: list[list[np.ndarray]], p: _Plan) -> np.ndarray:
  """Blends a grid of [B, F, h, w, C] tiles, each into the (already
  blended) one above and to its left, as diffusers blends in place, and
  joins their top-left kept corners."""
  result_rows = []
  for i, row in enumerate(rows):
    for j, tile in enumerate(row):
      if i > 0:
        tile = _blend(rows[i - 1][j], tile, p.blend[1], axis=2)
      if j > 0:
        tile = _blend(row[j - 1], tile, p.blend[2], axis=3)
      row[j] = tile
    result_rows.append(np.concatenate(
        [tile[:, :, :p.keep[1], :p.keep[2]] for tile in row], axis=3))
  return np.concatenate(result_rows, axis=2)


def _join_frames(chunks: list[np.ndarray], p: _Plan) -> np.ndarray:
  """diffusers' temporal stitching: chunk 0 keeps keep + 1 frames, later
  chunks (first frame dropped) blend into the previous and keep `keep`."""
  out = [chunks[0][:, :p.keep[0] + 1]]
  for i in range(1, len(chunks)):
    chunks[i] = _blend(chunks[i - 1], chunks[i], p.blend[0], axis=1)
    out.append(chunks[i][:, :p.keep[0]])
  return np.concatenate(out, axis=1)


def _run_tiles(run, x, p: _Plan, out_shape) -> np.ndarray:
  _, frames, height, width, _ = x.shape
  _, out_f, out_h, out_w, _ = out_shape
  chunks = []
  for n, (f0, f1) in enumerate(p.chunks(frames)):
    rows = [[np.asarray(run(x[:, f0:f1, i0:i1, j0:j1]))
             for i0, i1, j0, j1 in row] for row in p.grid(height, width)]
    y = (_stitch(rows, p) if p.spatial else rows[0][0])[:, :, :out_h, :out_w]
    chunks.append(y if n == 0 else y[:, 1:])
  out = _join_frames(chunks, p) if p.framewise else chunks[0]
  return out[:, :out_f]


def encode_tiles(run, video_BxFxHxWxC, t: Tiling, c: VAEConfig
                 ) -> np.ndarray:
  """diffusers `_encode` (`tiled_encode`, `_temporal_tiled_encode`) ->
  raw moments, host numpy, with `run(video tile) -> moments` as the
  per-tile encoder (any function of the right shapes: the tests check the
  algorithm with a cheap one)."""
  shape = video_BxFxHxWxC.shape
  out = c.latent_shape(shape)[:-1] + (2 * c.latent_channels,)
  return _run_tiles(run, video_BxFxHxWxC, _plan(t, c, True, shape), out)


def decode_tiles(run, z_BxfxhxwxL, t: Tiling, c: VAEConfig) -> np.ndarray:
  """diffusers `_decode` (`tiled_decode`, `_temporal_tiled_decode`) ->
  video, host numpy, with `run(latent tile) -> video tile`."""
  shape = z_BxfxhxwxL.shape
  return _run_tiles(run, z_BxfxhxwxL, _plan(t, c, False, shape),
                    c.video_shape(shape))


def tiled_moments(vae: AutoencoderKL, video_BxFxHxWxC, tiling: Tiling | None
                  = None, *, mesh=None, batch_axes=None,
                  compiler_options: dict | None = None) -> np.ndarray:
  """Raw moments [B, f, h, w, 2L] of a video, tiled (see module doc)."""
  t = Tiling() if tiling is None else tiling
  vae.config.check_video(video_BxFxHxWxC.shape)
  t.check(vae.config)
  run = sharding.bind(AutoencoderKL.moments, vae, mesh, batch_axes,
                      compiler_options=compiler_options)
  return encode_tiles(run, video_BxFxHxWxC, t, vae.config)


def tiled_encode(vae: AutoencoderKL, video_BxFxHxWxC, tiling: Tiling | None
                 = None, *, mesh=None, batch_axes=None,
                 compiler_options: dict | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
  """(mean, logvar) [B, f, h, w, L] of a video in [-1, 1], tiled; host
  numpy arrays (the tiles are stitched on the host).

  `video` may be a host array: only one tile at a time is on the device.
  With `mesh`, each tile's batch is split over the devices (`sharding`).
  Not traceable (a Python loop over tiles); each tile is jitted
  (`sharding.bind`, with `compiler_options`).
  """
  h = tiled_moments(vae, video_BxFxHxWxC, tiling, mesh=mesh,
                    batch_axes=batch_axes, compiler_options=compiler_options)
  mean, logvar = np.split(h, 2, axis=-1)
  return mean, np.clip(logvar, *LOGVAR_RANGE)


def tiled_decode(vae: AutoencoderKL, z_BxfxhxwxL, tiling: Tiling | None
                 = None, *, mesh=None, batch_axes=None,
                 compiler_options: dict | None = None) -> np.ndarray:
  """Video [B, 1 + 4 (f - 1), 8 h, 8 w, 3] of latents z (unscaled), tiled,
  as `tiled_encode`; host numpy."""
  t = Tiling() if tiling is None else tiling
  vae.config.check_latents(z_BxfxhxwxL.shape)
  t.check(vae.config)
  run = sharding.bind(AutoencoderKL.decode_raw, vae, mesh, batch_axes,
                      compiler_options=compiler_options)
  return decode_tiles(run, z_BxfxhxwxL, t, vae.config)


def tile_shapes(config: VAEConfig, video_shape, tiling: Tiling | None = None
                ) -> dict[str, list[tuple[tuple[int, ...], int]]]:
  """{'encode': [(tile input shape, count)], 'decode': [...]}, largest
  first: the per-tile calls (one compilation per distinct shape) for a
  video of `video_shape` and its latents."""
  t = Tiling() if tiling is None else tiling
  t.check(config)
  out = {}
  for kind, shape in (("encode", tuple(video_shape)),
                      ("decode", config.latent_shape(video_shape))):
    p = _plan(t, config, kind == "encode", shape)
    counts: dict[tuple[int, ...], int] = {}
    for f0, f1 in p.chunks(shape[1]):
      for row in p.grid(shape[2], shape[3]):
        for i0, i1, j0, j1 in row:
          key = (shape[0], f1 - f0, i1 - i0, j1 - j0, shape[4])
          counts[key] = counts.get(key, 0) + 1
    out[kind] = sorted(counts.items(), reverse=True)
  return out
