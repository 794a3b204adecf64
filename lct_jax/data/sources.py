"""Random-access scene sources: `len(source)`, `source[i] -> record`.

Any object with that interface feeds the pipeline (a TFDS
`builder.as_data_source(split)` does); records follow
`lct_jax.data.records`. `SyntheticSource` is the embedded default: scenes
drawn on the fly, so the demo and the tests need no dataset on disk.
"""
from __future__ import annotations

from lct_jax.data import records, synthetic
from lct_jax.data.text_encoder import HashedTextEncoder


class SyntheticSource:
  """Item i is `scene_to_record(generate_scene(seed + i, ...))`.

  Deterministic and stateless (a pure function of i), so it pickles cheaply
  into grain worker processes and any item can be re-read on resume.
  With `text_embed_dim > 0` the records also carry prompt embeddings (and
  pooled vectors of `pooled_dim > 0`) from `HashedTextEncoder`, standing in
  for precomputed text-encoder outputs.
  """

  def __init__(self, num_scenes: int, seed: int = 0, *, max_shots: int = 4,
               max_frames: int = 4, size: int = 32, text_embed_dim: int = 0,
               pooled_dim: int = 0):
    if num_scenes < 1:
      raise ValueError(f"num_scenes={num_scenes} must be >= 1")
    self.num_scenes, self.seed = int(num_scenes), int(seed)
    self.max_shots, self.max_frames, self.size = max_shots, max_frames, size
    self.encoder = (HashedTextEncoder(text_embed_dim, pooled_dim)
                    if text_embed_dim else None)

  def frame_sizes(self):
    """(H, W) of every record's frames, without generating any scene."""
    return [(self.size, self.size)] * self.num_scenes

  def __len__(self) -> int:
    return self.num_scenes

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    if not 0 <= index < self.num_scenes:
      raise IndexError(f"scene {index} out of range [0, {self.num_scenes})")
    scene = synthetic.generate_scene(self.seed + index,
                                     max_shots=self.max_shots,
                                     max_frames=self.max_frames,
                                     size=self.size)
    record = records.scene_to_record(scene)
    return self.encoder.embed_record(record) if self.encoder else record

  def __repr__(self) -> str:
    return (f"SyntheticSource(num_scenes={self.num_scenes}, seed={self.seed}, "
            f"max_shots={self.max_shots}, max_frames={self.max_frames}, "
            f"size={self.size}, text_embed_dim="
            f"{self.encoder.dim if self.encoder else 0})")
