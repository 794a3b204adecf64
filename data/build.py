r"""Builds a scene dataset (TFDS, array_record): synthetic or from a folder.

  python data/build.py synthetic --data_dir DIR --num_scenes 256 \
      [--num_validation 32] [--max_shots 4 --max_frames 4 --size 32]
  python data/build.py folder --src DIR --data_dir DIR [--kind pixels|latents]
      [--num_validation 0] [--skip_bad_records]

Prints where the dataset went and its split sizes. An existing dataset with
the same configuration is reused, not rebuilt. argparse, not absl: the
sub-command comes first and there is no config file to merge.
"""
from __future__ import annotations

import argparse
import sys

from lct_jax.data import builders


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  commands = parser.add_subparsers(dest="command", required=True)

  synthetic = commands.add_parser("synthetic", help="procedural scenes")
  synthetic.add_argument("--data_dir", required=True)
  synthetic.add_argument("--num_scenes", type=int, required=True,
                         help="train scenes (seeds 0..N-1)")
  synthetic.add_argument("--num_validation", type=int, default=0)
  synthetic.add_argument("--max_shots", type=int, default=4)
  synthetic.add_argument("--max_frames", type=int, default=4)
  synthetic.add_argument("--size", type=int, default=32)

  scenes = commands.add_parser("folder", help="a folder of real scenes")
  scenes.add_argument("--src", required=True,
                      help="folder of <scene_id>/scene.json sub-folders")
  scenes.add_argument("--data_dir", required=True)
  scenes.add_argument("--kind", choices=("pixels", "latents"), default=None,
                      help="default: the kind of the first scene")
  scenes.add_argument("--num_validation", type=int, default=0,
                      help="the last N scenes (sorted ids) for validation")
  scenes.add_argument("--skip_bad_records", action="store_true",
                      help="skip and count bad scenes instead of stopping")
  return parser


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  if args.command == "synthetic":
    builder = builders.build_synthetic(
        args.data_dir, args.num_scenes, args.num_validation,
        max_shots=args.max_shots, max_frames=args.max_frames, size=args.size)
  else:
    builder = builders.build_folder(
        args.src, args.data_dir, args.kind,
        num_validation=args.num_validation,
        skip_bad_records=args.skip_bad_records)
  sizes = {name: split.num_examples
           for name, split in builder.info.splits.items()}
  print(f"dataset {builder.name}/{builder.builder_config.name} at "
        f"{builder.data_dir}: {sizes}; skipped as bad: "
        f"{builders.skipped_records(builder)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
