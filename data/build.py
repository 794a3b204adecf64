r"""Builds a scene dataset (TFDS, array_record): synthetic or from a folder.

  python data/build.py synthetic --data_dir DIR --num_scenes 256 \
      [--num_validation 32] [--max_shots 4 --max_frames 4 --size 32]
  python data/build.py folder --src DIR --data_dir DIR [--kind pixels|latents]
      [--num_validation 0] [--skip_bad_records]
  # real videos for a latent-space model (HunyuanVideo): encode, then build
  python data/build.py folder --src DIR --data_dir DIR \
      --vae /models/HunyuanVideo --text_encoders /models/HunyuanVideo \
      [--height 480 --width 848] [--encoded_dir DIR]

With --vae and/or --text_encoders the scenes are first encoded into
--encoded_dir (default DATA_DIR/encoded_scenes; `lct_jax.data.encode_scenes`:
VAE latents, prompt embeddings; resumable, a rerun skips finished scenes;
undecodable or too-short videos are named, skipped and counted), and the
dataset is built from there.

Prints where the dataset went and its split sizes. An existing dataset with
the same configuration is reused, not rebuilt. argparse, not absl: the
sub-command comes first and there is no config file to merge.
"""
from __future__ import annotations

import argparse
import os
import sys

from lct_jax.convert.vae import load_vae
from lct_jax.data import builders
from lct_jax.data import encode_scenes
from lct_jax.data import hunyuan_text   # torch, transformers: on first use
from lct_jax.vae import Tiling


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
  scenes.add_argument("--vae", default=None,
                      help="encode videos to latents with this VAE: a "
                      "diffusers (pipeline) folder or a converted checkpoint")
  scenes.add_argument("--text_encoders", default=None,
                      help="add prompt embeddings from this HunyuanVideo "
                      "pipeline folder (text_encoder/, tokenizer/, "
                      "text_encoder_2/, tokenizer_2/)")
  scenes.add_argument("--encoded_dir", default=None,
                      help="where encoded scenes go (default: "
                      "DATA_DIR/encoded_scenes)")
  scenes.add_argument("--height", type=int, default=None,
                      help="with --vae: cover-crop frames to this size")
  scenes.add_argument("--width", type=int, default=None)
  return parser


def _encode(args) -> str:
  """Encodes args.src into the encoded folder; -> that folder."""
  if args.text_encoders:                # before any work: a wrong folder
    hunyuan_text.check_folder(args.text_encoders)
  vae = load_vae(args.vae) if args.vae else None
  text = (hunyuan_text.HunyuanTextEncoder.from_folder(args.text_encoders)
          if args.text_encoders else None)
  sources = {k: v for k, v in (("vae", args.vae),
                               ("text_encoders", args.text_encoders)) if v}
  encoder = encode_scenes.SceneEncoder(vae, text, tiling=Tiling(),
                                       height=args.height, width=args.width,
                                       sources=sources)
  dst = args.encoded_dir or os.path.join(args.data_dir, "encoded_scenes")
  report = encode_scenes.encode_folder(args.src, dst, encoder)
  print(f"{report.summary()} -> {dst}")
  for scene_id, why in report.skipped.items():
    print(f"  skipped {scene_id}: {why}")
  return dst


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  if args.command == "synthetic":
    builder = builders.build_synthetic(
        args.data_dir, args.num_scenes, args.num_validation,
        max_shots=args.max_shots, max_frames=args.max_frames, size=args.size)
  else:
    src = args.src
    if args.vae or args.text_encoders:
      src = _encode(args)
    builder = builders.build_folder(
        src, args.data_dir, args.kind,
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
