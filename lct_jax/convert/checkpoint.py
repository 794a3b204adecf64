"""The converted-weights checkpoint: an orbax PyTree of the params dict.

Layout of a checkpoint directory (docs/parity.md):
  DIR/params/              orbax `StandardCheckpointer` PyTree: the pure
                           dict `nnx.to_pure_dict(nnx.state(model, nnx.Param))`
                           (stacked blocks carry a leading layer axis)
  DIR/config.json          the full lct-jax config it was made for
                           (`ConfigDict.to_json`); the model fields matter
  DIR/diffusers_config.json  the source model's diffusers config, if any

`train.init_from` points at DIR; the loop calls `load_params(DIR, config)`.
"""
from __future__ import annotations

import json
import os
import shutil

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from lct_jax import configlib
from lct_jax.convert import hunyuan
from lct_jax.sampling import load

PARAMS = "params"
CONFIG = "config.json"
DIFFUSERS_CONFIG = "diffusers_config.json"


def write_dir(path: str, params: dict, files: dict[str, str], *,
              overwrite: bool = False) -> None:
  """Writes DIR/params (orbax) and the text `files` {name: content}.

  Nothing of an existing checkpoint is replaced until the new one is whole:
  the params go to `params.partial` and the files to `*.partial` first,
  then each is renamed into place (the old params moved aside and deleted
  last), so a save that fails (disk full, preemption) leaves the last good
  checkpoint readable.
  """
  path = os.path.abspath(path)
  final = os.path.join(path, PARAMS)
  if os.path.exists(final) and not overwrite:
    raise FileExistsError(f"{final} exists; pass overwrite=True "
                          "(--overwrite) to replace it")
  os.makedirs(path, exist_ok=True)
  partial, old = final + ".partial", final + ".old"
  for leftover in (partial, old):       # from an earlier, interrupted save
    shutil.rmtree(leftover, ignore_errors=True)
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(partial, params)
  ckptr.wait_until_finished()
  for name, content in files.items():
    with open(os.path.join(path, name + ".partial"), "w") as f:
      f.write(content)
  if os.path.exists(final):
    os.replace(final, old)
  os.replace(partial, final)
  for name in files:
    os.replace(os.path.join(path, name + ".partial"), os.path.join(path, name))
  shutil.rmtree(old, ignore_errors=True)


def save_params(path: str, params: dict, config: ml_collections.ConfigDict,
                *, diffusers_config: dict | None = None,
                overwrite: bool = False) -> None:
  """Writes `params` (a pure dict of arrays) and the config under `path`
  (`write_dir`: a failed save keeps the previous checkpoint)."""
  files = {CONFIG: config.to_json(indent=1)}
  if diffusers_config is not None:
    files[DIFFUSERS_CONFIG] = json.dumps(diffusers_config, indent=1)
  write_dir(path, params, files, overwrite=overwrite)


def load_config(path: str) -> ml_collections.ConfigDict:
  """The config saved with the checkpoint, read as a run's is
  (`sampling.load.overlay`: onto base_config)."""
  with open(os.path.join(path, CONFIG)) as f:
    saved = json.load(f)
  c = configlib.base_config()
  load.overlay(c, saved)
  return c


def load_params(path: str, config: ml_collections.ConfigDict | None = None,
                *, abstract: dict | None = None) -> dict:
  """Restores the params dict saved by `save_params` (or the CLI).

  With `config`, the tree is checked against that config's model (a clear
  error names the differing parameters) and restored as float32 jax arrays
  with the shapes the model expects. `abstract` (a tree of
  `jax.ShapeDtypeStruct`, e.g. with shardings) overrides that target.
  Without either, arrays come back as saved.
  """
  params_dir = os.path.join(os.path.abspath(path), PARAMS)
  if not os.path.isdir(params_dir):
    raise FileNotFoundError(f"{params_dir} not found: not a checkpoint made by "
                            "lct_jax.convert.save_params")
  ckptr = ocp.StandardCheckpointer()
  if abstract is None and config is not None:
    abstract = hunyuan.abstract_params(config)
    saved = ckptr.metadata(params_dir)
    saved_tree = getattr(saved, "item_metadata", saved)
    _check_same_tree(saved_tree, abstract)
  if abstract is None:
    return ckptr.restore(params_dir)
  abstract = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype,
                                     sharding=getattr(a, "sharding", None)),
      abstract)
  return ckptr.restore(params_dir, abstract)


def _check_same_tree(saved, want) -> None:
  flat = lambda t: {jax.tree_util.keystr(p): tuple(np.shape(x) if not hasattr(
      x, "shape") else x.shape) for p, x in
                    jax.tree_util.tree_flatten_with_path(t)[0]}
  s, w = flat(saved), flat(want)
  problems = []
  if set(s) - set(w):
    problems.append(
        f"not in the config's model: {sorted(set(s) - set(w))[:20]}")
  if set(w) - set(s):
    problems.append(
        f"missing from the checkpoint: {sorted(set(w) - set(s))[:20]}")
  bad = [f"{k}: saved {s[k]} vs config {w[k]}" for k in sorted(set(s) & set(w))
         if s[k] != w[k]]
  if bad:
    problems.append(f"shape mismatches: {bad[:20]}")
  if problems:
    raise ValueError("checkpoint params do not match the config: "
                     + "; ".join(problems))
