"""Imports run down the layers of docs/design.md's module map.

Reads every `lct_jax` import of every module from its source (those inside
functions too), so a lower layer that reaches up, for example the model
importing the run config or training importing the samplers, fails here
instead of surfacing later as an import cycle.
"""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "lct_jax"

# Module prefix -> layer (docs/design.md, "Module map"); the longest
# matching prefix wins. A module may import its own layer and those below.
LAYERS = {
    "lct_jax.layout": 0,
    "lct_jax.parallel": 1,
    "lct_jax.attention": 2,
    "lct_jax.model": 3,
    "lct_jax.vae": 3,
    "lct_jax.diffusion": 3,
    "lct_jax.data": 3,
    "lct_jax.batch": 3,
    "lct_jax.configlib": 4,
    "lct_jax.training": 5,
    "lct_jax.sampling": 6,
    "lct_jax.evaluate": 7,
    "lct_jax.aot": 7,
    "lct_jax.convert": 7,
    "lct_jax.stages": 7,
    "lct_jax.experiments": 8,
}
# Lazy project imports that are deliberate, each for an optional or slow
# dependency (the comment at the import says which).
LAZY = {
    ("lct_jax.data.pipeline", "lct_jax.data.builders"),   # tensorflow_datasets
    ("lct_jax.sampling.scene_file", "lct_jax.data.folder"),   # PyAV
    ("lct_jax.sampling.media", "lct_jax.data.folder"),        # PyAV
}


def layer_of(module: str) -> int:
  best = max((p for p in LAYERS if module == p or module.startswith(p + ".")),
             key=len, default=None)
  if best is None:
    raise AssertionError(f"{module} is in no layer of LAYERS")
  return LAYERS[best]


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: pathlib.Path):
  """-> [(imported module, is at module top)] for every lct_jax import."""
  tree = ast.parse(path.read_text())
  top = {id(n) for n in tree.body}
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      # `from lct_jax.model import sharding` imports a submodule when one
      # exists; otherwise a name of the package.
      names = []
      for a in node.names:
        sub = f"{node.module}.{a.name}"
        is_module = any((PACKAGE.parent / (sub.replace(".", "/") + s)).exists()
                        for s in (".py", "/__init__.py"))
        names.append(sub if is_module else node.module)
    else:
      continue
    out += [(n, id(node) in top) for n in names if n.startswith("lct_jax")]
  return out


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_go_down(path):
  me = module_name(path)
  upward = [m for m, _ in project_imports(path) if layer_of(m) > layer_of(me)]
  assert not upward, f"{me} (layer {layer_of(me)}) imports " + ", ".join(
      f"{m} (layer {layer_of(m)})" for m in upward)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_project_imports_at_module_top(path):
  me = module_name(path)
  lazy = {m for m, at_top in project_imports(path) if not at_top}
  assert lazy <= {m for a, m in LAZY if a == me}, (
      f"{me} imports {sorted(lazy)} inside a function; move it to the top "
      "or, for an optional dependency, list it in LAZY with its reason")


def test_an_upward_import_is_caught(tmp_path):
  """The check itself fails on a model module that imports the config."""
  bad = PACKAGE / "model" / "mmdit.py"
  fake = tmp_path / "lct_jax" / "model" / "mmdit.py"
  fake.parent.mkdir(parents=True)
  fake.write_text(bad.read_text() + "\n\ndef f():\n"
                  "  from lct_jax import configlib\n")
  imports = project_imports(fake)
  assert ("lct_jax.configlib", False) in imports
  assert layer_of("lct_jax.configlib") > layer_of("lct_jax.model.mmdit")
