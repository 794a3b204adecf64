"""Runs a script with some of the synthetic generator's factors pinned.

  python benchmarks/pin_factors.py --pin framing=close -- \
      train.py --config configs/demo.py:text_rope --workdir runs/close5k ...
  python benchmarks/pin_factors.py --pin framing=close -- \
      benchmarks/denoise_from_t.py --workdir runs/close5k --swap_shape
  python benchmarks/pin_factors.py \
      --pin sprite_color=red,background_color=grey,texture=plain,tint=neutral,size=large,framing=close,action=still \
      -- benchmarks/shape_confusion.py --workdir runs/shape_only

An experiment aid, not a data option: in this process every generated
scene draws each pinned factor from a one-entry table, for training (the
synthetic source, in-process: data.workers = 0) and for held-out scenes,
so a probe asks "can the model learn X when only these factors vary?".
The estimators keep the full tables, so a sample is judged as any other.
The sprite's radius level keeps the full table's rule (size and framing
interleave), so pinning the framing does not rescale the sprites. Used
for the probes in BENCHMARKS.md ("Session of 2026-12-06 (second)" and
"(third)").
"""
import argparse
import runpy
import sys

from lct_jax.data import synthetic

# factor -> the module-level table that `generate_scene` draws it from.
TABLES = {"shape": "SHAPES", "sprite_color": "SPRITE_COLORS",
          "size": "SIZES", "background_color": "BACKGROUND_COLORS",
          "texture": "TEXTURES", "tint": "TINTS", "framing": "FRAMINGS",
          "action": "ACTIONS"}
FULL_FRAMINGS = synthetic.FRAMINGS
_generate = synthetic.generate_scene


def parse_pins(text: str) -> dict:
  """"f=v,g=w" -> {f: v, g: w}, each factor and value checked."""
  pins = {}
  for item in filter(None, text.split(",")):
    factor, sep, value = item.partition("=")
    if not sep or factor not in TABLES:
      raise SystemExit(f"--pin: {item!r} is not factor=value with a factor "
                       f"in {sorted(TABLES)}")
    if value not in getattr(synthetic, TABLES[factor]):
      raise SystemExit(f"--pin: {value!r} is not a {factor}; expected one "
                       f"of {list(getattr(synthetic, TABLES[factor]))}")
    pins[factor] = value
  return pins


def _radius_level(size_name: str, framing: str) -> int:
  # The module's rule against the full table, whatever FRAMINGS holds now.
  return synthetic.SIZES.index(size_name) + 2 * FULL_FRAMINGS.index(framing)


def pinned(pins: dict):
  """generate_scene with each pinned factor's table cut to its value."""
  def generate(*args, **kwargs):
    saved = {}
    for factor, value in pins.items():
      name = TABLES[factor]
      table = saved[name] = getattr(synthetic, name)
      setattr(synthetic, name, {value: table[value]}
              if isinstance(table, dict) else (value,))
    try:
      return _generate(*args, **kwargs)
    finally:
      for name, table in saved.items():
        setattr(synthetic, name, table)
  return generate


def main():
  if "--" not in sys.argv:
    raise SystemExit(__doc__)
  split = sys.argv.index("--")
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--pin", required=True,
                 help="factor=value[,factor=value...]")
  pins = parse_pins(p.parse_args(sys.argv[1:split]).pin)
  synthetic.radius_level = _radius_level
  synthetic.generate_scene = pinned(pins)
  sys.argv = sys.argv[split + 1:]
  runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
  main()
