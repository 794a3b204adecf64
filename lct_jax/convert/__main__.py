"""Command line: local diffusers folder <-> lct-jax orbax checkpoint.

  # diffusers HunyuanVideo transformer -> checkpoint for train.init_from
  python -m lct_jax.convert import --src /models/HunyuanVideo/transformer \
      --dst /ckpt/hunyuan_t2v [--config configs/lct_3b.py:text_rope] \
      [--dtype float32] [--overwrite]

  # a checkpoint (converted or trained, text_mode='embeddings') -> a folder
  # that HunyuanVideoTransformer3DModel.from_pretrained reads
  python -m lct_jax.convert export --src /ckpt/hunyuan_t2v --dst /out/folder

  # the HunyuanVideo VAE (a VAE folder or a pipeline folder with vae/)
  python -m lct_jax.convert vae import --src /models/HunyuanVideo \
      --dst /ckpt/hunyuan_vae [--dtype float32] [--overwrite]
  python -m lct_jax.convert vae export --src /ckpt/hunyuan_vae --dst /out/vae

Nothing is downloaded. The model fields of the config come from the
diffusers config.json; `--config` supplies the rest (scene sizes, training).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from lct_jax import configlib
from lct_jax.convert import checkpoint, folder, hunyuan
from lct_jax.convert import vae as vae_io

DTYPES = ("bfloat16", "float32")


def _dtype(name: str):
  if name == "bfloat16":
    import ml_dtypes  # pylint: disable=g-import-not-at-top
    return ml_dtypes.bfloat16
  return np.dtype(name)


def cmd_import(args) -> None:
  t0 = time.time()
  dconf, state_dict = folder.load_folder(args.src)
  base = configlib.load(args.config) if args.config else None
  config = hunyuan.config_from_diffusers(dconf, base)
  params = hunyuan.import_state_dict(state_dict, config,
                                     dtype=_dtype(args.dtype))
  checkpoint.save_params(args.dst, params, config, diffusers_config=dconf,
                         overwrite=args.overwrite)
  n = sum(int(np.prod(v.shape)) for v in state_dict.values())
  print(f"imported {len(state_dict)} tensors ({n / 1e6:.1f}M values) from "
        f"{folder.resolve(args.src)} -> {args.dst} in {time.time() - t0:.1f}s")


def cmd_export(args) -> None:
  config = checkpoint.load_config(args.src)
  params = checkpoint.load_params(args.src, config)
  state_dict = hunyuan.export_state_dict(params, config,
                                         dtype=_dtype(args.dtype))
  folder.save_folder(args.dst, hunyuan.diffusers_config(config), state_dict,
                     max_shard_bytes=int(args.max_shard_gb * 2**30))
  print(f"exported {len(state_dict)} tensors -> {args.dst}")


def cmd_vae_import(args) -> None:
  t0 = time.time()
  config, n = vae_io.import_folder(args.src, args.dst,
                                   dtype=_dtype(args.dtype),
                                   overwrite=args.overwrite)
  print(f"imported {n} VAE tensors (block_out_channels="
        f"{list(config.block_out_channels)}, latent_channels="
        f"{config.latent_channels}) from {vae_io.resolve(args.src)} -> "
        f"{args.dst} in {time.time() - t0:.1f}s")


def cmd_vae_export(args) -> None:
  dtype = None if args.dtype == "saved" else _dtype(args.dtype)
  n = vae_io.export_folder(args.src, args.dst, dtype=dtype)
  print(f"exported {n} VAE tensors -> {args.dst}")


def _add_vae(sub) -> None:
  vae = sub.add_parser("vae", help="the HunyuanVideo VAE: diffusers folder "
                       "<-> orbax checkpoint")
  vsub = vae.add_subparsers(dest="vae_command", required=True)
  imp = vsub.add_parser("import", help="diffusers VAE folder (or a pipeline "
                        "folder's vae/) -> orbax checkpoint")
  imp.add_argument("--src", required=True, help="diffusers VAE folder")
  imp.add_argument("--dst", required=True, help="checkpoint directory")
  imp.add_argument("--dtype", default="float32", choices=DTYPES)
  imp.add_argument("--overwrite", action="store_true")
  imp.set_defaults(fn=cmd_vae_import)
  exp = vsub.add_parser("export", help="orbax checkpoint -> diffusers VAE "
                        "folder")
  exp.add_argument("--src", required=True, help="checkpoint directory")
  exp.add_argument("--dst", required=True, help="output model folder")
  exp.add_argument("--dtype", default="saved", choices=("saved",) + DTYPES,
                   help="'saved': each tensor as the checkpoint holds it")
  exp.set_defaults(fn=cmd_vae_export)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m lct_jax.convert",
                              description=__doc__.split("\n\n")[0])
  sub = p.add_subparsers(dest="command", required=True)
  imp = sub.add_parser("import", help="diffusers folder -> orbax checkpoint")
  imp.add_argument("--src", required=True, help="diffusers model folder")
  imp.add_argument("--dst", required=True, help="checkpoint directory")
  imp.add_argument("--config", default="",
                   help="config file (path[:arg]) for the non-model fields")
  imp.add_argument("--dtype", default="float32", choices=DTYPES)
  imp.add_argument("--overwrite", action="store_true")
  imp.set_defaults(fn=cmd_import)
  exp = sub.add_parser("export", help="orbax checkpoint -> diffusers folder")
  exp.add_argument("--src", required=True, help="checkpoint directory")
  exp.add_argument("--dst", required=True, help="output model folder")
  exp.add_argument("--dtype", default="float32", choices=DTYPES)
  exp.add_argument("--max_shard_gb", type=float, default=0.0,
                   help="shard the safetensors above this size; 0 = one file")
  exp.set_defaults(fn=cmd_export)
  _add_vae(sub)
  args = p.parse_args(argv)
  try:
    args.fn(args)
  except (ValueError, FileNotFoundError, FileExistsError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
