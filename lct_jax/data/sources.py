"""Random-access scene sources: `len(source)`, `source[i] -> record`.

Any object with that interface feeds the pipeline (a TFDS
`builder.as_data_source(split)` does); records follow
`lct_jax.data.records`. `SyntheticSource` is the embedded default: scenes
drawn on the fly, so the demo and the tests need no dataset on disk.
"""
from __future__ import annotations

from lct_jax.data import records, synthetic


class SyntheticSource:
  """Item i is `scene_to_record(generate_scene(seed + i, ...))`.

  Deterministic and stateless (a pure function of i), so it pickles cheaply
  into grain worker processes and any item can be re-read on resume.
  """

  def __init__(self, num_scenes: int, seed: int = 0, *, max_shots: int = 4,
               max_frames: int = 4, size: int = 32):
    if num_scenes < 1:
      raise ValueError(f"num_scenes={num_scenes} must be >= 1")
    self.num_scenes, self.seed = int(num_scenes), int(seed)
    self.max_shots, self.max_frames, self.size = max_shots, max_frames, size

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
    return records.scene_to_record(scene)

  def __repr__(self) -> str:
    return (f"SyntheticSource(num_scenes={self.num_scenes}, seed={self.seed}, "
            f"max_shots={self.max_shots}, max_frames={self.max_frames}, "
            f"size={self.size})")
