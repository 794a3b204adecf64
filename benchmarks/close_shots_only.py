"""Runs a script with the synthetic generator restricted to close shots.

  python benchmarks/close_shots_only.py train.py --config configs/demo.py:text_rope ...
  python benchmarks/close_shots_only.py benchmarks/denoise_from_t.py --workdir ... --swap_shape

An experiment aid, not a data option: in this process every generated
scene uses the close framing (sprite radius levels 4-5, 8 and 10 px at
32 x 32, where the four shapes differ by dozens of pixels), for training
(the synthetic source, in-process: data.workers = 0) and for held-out
scenes. The estimators keep the full framing table. Used for the
large-sprite curriculum probe in BENCHMARKS.md ("Session of 2026-12-06
(second)").
"""
import runpy
import sys

from lct_jax.data import synthetic

ALL_FRAMINGS = synthetic.FRAMINGS
_generate = synthetic.generate_scene


def _radius_level(size_name: str, framing: str) -> int:
  # The module's rule against the full table, whatever FRAMINGS holds now.
  return synthetic.SIZES.index(size_name) + 2 * ALL_FRAMINGS.index(framing)


def _close_only(*args, **kwargs):
  synthetic.FRAMINGS = ("close",)
  try:
    return _generate(*args, **kwargs)
  finally:
    synthetic.FRAMINGS = ALL_FRAMINGS


if __name__ == "__main__":
  synthetic.radius_level = _radius_level
  synthetic.generate_scene = _close_only
  sys.argv = sys.argv[1:]
  runpy.run_path(sys.argv[0], run_name="__main__")
