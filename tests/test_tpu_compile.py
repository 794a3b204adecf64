"""The demo's train step and samplers compiled by the real TPU compiler.

libtpu (the `tpu` extra; `.ci/run` installs it) compiles for a TPU topology
on a CPU-only machine. Checked against the compiler itself: its argument
bytes equal what the shardings say each device holds, and no array in the
compiled program is a dense [queries, keys] tile of the sequence (the
blockwise kernel's tiles are block_q x block_kv; a dense fallback's are not).
"""
import importlib.metadata
import importlib.util
import re

import pytest

from lct_jax import configlib
from lct_jax.parallel import topology

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None,
    reason="libtpu is not installed (pip install -e '.[tpu]'): TPU "
    "compilation is not tested")

SLICE = "v5e:2x2"            # 4 chips: the smallest host the compiler takes
BLOCK = 64                   # tiles well under the sequence (336 tokens)


def demo_config():
  c = configlib.load("configs/demo.py")
  c.mesh.data, c.mesh.fsdp, c.mesh.context, c.mesh.tensor = 1, 2, 2, 1
  c.model.block_q = c.model.block_kv = BLOCK
  return c


def dense_tiles(compiled, seq: int, context: int = 1) -> list[str]:
  """Shapes in the compiled HLO that look like dense attention scores: a
  dimension of the whole sequence and another of it or of one device's
  share of it ([.., S / context, S] or [.., S, S])."""
  shapes = set(re.findall(r"\b(?:f32|bf16|f16|pred)\[([\d,]+)\]",
                          compiled.as_text()))
  out = []
  for s in shapes:
    dims = [int(d) for d in s.split(",")]
    if seq in dims and len(dims) >= 2:
      rest = list(dims)
      rest.remove(seq)
      if seq in rest or seq // context in rest:
        out.append(s)
  return sorted(out)


@pytest.fixture(scope="module")
def aot():
  from lct_jax import aot as aot_lib  # pylint: disable=g-import-not-at-top
  return aot_lib


@pytest.fixture(scope="module")
def step_report(aot):
  return aot.compile_train_step(demo_config(), SLICE)


def test_demo_step_compiles_for_tpu_and_fits(step_report, aot):
  r = step_report
  assert r.compiled is not None and r.fits
  assert r.mesh == {"data": 1, "fsdp": 2, "context": 2, "tensor": 1}
  assert r.tpu_slice.hbm_bytes == int(15.75 * aot.GIB)
  # The compiler's arguments are the donated train state (as sharded here),
  # the batch share, the RNG key and two scalars, each laid out in TPU
  # tiles (the last two dimensions padded to 8 x 128): the demo's many small
  # vectors make that ~12% more here, never less.
  ours = r.params + r.optimizer + r.ema + r.batch
  assert ours <= r.arguments <= 1.2 * ours
  # The new state aliases the donated one.
  assert r.aliased >= r.params + r.optimizer + r.ema
  assert 0 < r.temp < r.tpu_slice.hbm_bytes
  assert "fits" in r.table()


def test_demo_step_has_no_dense_attention(step_report):
  assert dense_tiles(step_report.compiled, step_report.tokens_per_scene,
                     context=2) == []


def test_the_dense_check_sees_a_dense_kernel(aot):
  # The check itself, against garbage: the dense reference kernel, compiled
  # the same way, does hold [.., S/2, S] score arrays.
  # (The joint sampler: a forward only, the quickest to compile.)
  c = demo_config()
  c.model.attention_impl = "dense"
  c.model.depth = 1
  (r,) = aot.compile_samplers(c, SLICE, kinds=("joint",))
  assert dense_tiles(r.compiled, r.tokens_per_scene, context=2)


def test_samplers_compile_for_tpu(aot):
  # bf16 compute over float32 parameters, as the 3B config samples.
  c = demo_config()
  c.model.compute_dtype = "bfloat16"
  joint, causal = aot.compile_samplers(c, SLICE)
  for r in (joint, causal):
    assert r.compiled is not None and r.fits, r.table()
    assert dense_tiles(r.compiled, r.tokens_per_scene, context=2) == [], r.what
  assert "causal cached shot" in causal.what
  # The cache is an input of the cached shot: more argument bytes than the
  # parameters alone.
  assert causal.batch > 0 and causal.arguments >= causal.params + causal.batch


def test_state_that_cannot_fit_is_reported_before_compiling(aot):
  c = configlib.load("configs/lct_3b.py")
  c.mesh.data, c.mesh.fsdp, c.mesh.context, c.mesh.tensor = 1, 4, 1, 1
  c.train.batch_size, c.train.grad_accum = 4, 1
  r = aot.compile_train_step(c, SLICE)
  assert not r.fits and r.compiled is None
  # 3B parameters, two moments and the EMA in float32 over 4 devices.
  assert r.needed > 3 * 16 / 4 * 1e9 * 0.9
  assert "15.75 GiB" in r.table() and "DOES NOT FIT" in r.table()


def test_mesh_that_does_not_divide_the_slice_is_named(aot):
  c = demo_config()
  c.mesh.fsdp, c.mesh.context = 3, 1
  with pytest.raises(ValueError, match="v5e:2x2.*4 devices"):
    aot.compile_train_step(c, SLICE)


@pytest.mark.parametrize("name", ["v9-128", "v5p-100", "v5e:2x2x2", "tpu"])
def test_unknown_slice_names_are_named(name):
  with pytest.raises(ValueError, match=re.escape(repr(name))):
    topology.parse_slice(name)


@pytest.mark.parametrize("name,topo,devices", [
    ("v5p-8", "v5:2x2x1", 4), ("v5p-64", "v5:2x4x4", 32),
    ("v5p-128", "v5:4x4x4", 64), ("v5p-256", "v5:4x4x8", 128),
    ("v5e-256", "v5e:16x16", 256), ("v6e-8", "v6e:2x4", 8),
    ("v6e-256", "v6e:16x16", 256), ("tpu7x-64", "tpu7x:2x4x4", 64)])
def test_cloud_names_map_to_topologies(name, topo, devices):
  # Cloud's published shapes (v5p-128 is 4x4x4 chips, v6e-256 16x16).
  s = topology.parse_slice(name)
  assert (s.topology, s.num_devices) == (topo, devices)


def test_libtpu_that_does_not_match_jax_is_refused(monkeypatch):
  real = importlib.metadata.version
  monkeypatch.setattr(
      topology.importlib.metadata, "version",
      lambda pkg: "0.0.1" if pkg == "libtpu" else real(pkg))
  with pytest.raises(RuntimeError, match="libtpu 0.0.1 does not match jax"):
    topology.check_libtpu()


def test_missing_libtpu_is_named(monkeypatch):
  real = importlib.metadata.version

  def version(pkg):
    if pkg == "libtpu":
      raise importlib.metadata.PackageNotFoundError(pkg)
    return real(pkg)
  monkeypatch.setattr(topology.importlib.metadata, "version", version)
  with pytest.raises(RuntimeError, match=r"libtpu, which is not installed"):
    topology.check_libtpu()


@pytest.mark.parametrize("fsdp,context,strategy,mask", [
    (4, 1, "ring", "bidirectional"), (4, 1, "ring", "context_causal"),
    (2, 2, "ulysses", "context_causal"), (2, 2, "all_gather", "bidirectional")])
def test_auto_attention_is_splash_on_a_tpu_mesh(aot, fsdp, context,
                                                strategy, mask):
  # 'auto' resolves from the mesh's devices (TPU), not this CPU machine's
  # backend: splash, a Mosaic kernel (tpu_custom_call), with no dense
  # fallback; under a context axis it is the all_gather / ulysses local
  # kernel (3 shots: 256 tokens; per device 128-multiples after padding).
  c = configlib.load("configs/demo.py")
  c.mesh.data, c.mesh.fsdp, c.mesh.context, c.mesh.tensor = (1, fsdp,
                                                             context, 1)
  c.model.context_strategy = strategy
  c.scene.max_shots = c.data.synthetic_max_shots = 3
  c.model.block_q = c.model.block_kv = 128
  c.model.attention_mask = mask
  (r,) = aot.compile_samplers(c, SLICE, kinds=("joint",))
  assert r.tokens_per_scene == 256
  assert 'custom_call_target="tpu_custom_call"' in r.compiled.as_text()
  assert dense_tiles(r.compiled, r.tokens_per_scene, context) == []
