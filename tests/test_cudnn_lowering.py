"""The cuDNN path lowered for CUDA on a CPU machine (no GPU needed).

jax can lower a program for a platform it is not running on
(`jax.export(..., platforms=['cuda'])`). The cuDNN attention lowering asks
the installed cuDNN for its version, the one step that needs a GPU
machine; that check is stubbed here and nothing else. What this proves:
the key-prefix construction (`accel.attend_key_prefixes`) and the whole
training gradient with `attention_impl='cudnn'` lower to cuDNN's flash
attention custom calls, forward and backward, one call per query group for
context_causal (one for bidirectional), with no dense [S, S] mask anywhere
in the program. What it does not prove: that cuDNN accepts the calls at
run time or its numbers; those are `implementation='xla'`'s twin in
tests/test_accel_attention.py and, on a GPU, benchmarks/gpu_step.py.
"""
import collections
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from _util import tiny_config
from lct_jax import batch as batch_lib
from lct_jax.attention import GroupMask, accel
from lct_jax.layout import SceneGeometry
from lct_jax.training import compute_grads, init_model

FWD, BWD = "__cudnn$fmhaSoftmax", "__cudnn$fmhaSoftmaxBackward"
# A scene-like sequence: 3 video runs of 96 tokens, 4 prompts of 16.
IDS = np.concatenate([np.repeat([1, 2, 3], 96), np.repeat([0, 1, 2, 3], 16)])


@pytest.fixture
def cuda_lowering(monkeypatch):
  """Lowers for CUDA here: stubs cuDNN's version query (needs the GPU's
  libraries) and the dispatcher's 'backend is not gpu' rule."""
  fa = pytest.importorskip("jax._src.cudnn.fused_attention_stablehlo")
  if not hasattr(fa, "check_cudnn_version"):
    pytest.skip("this jax has no cuDNN version check to stub")
  monkeypatch.setattr(fa, "check_cudnn_version", lambda *a, **k: None)
  monkeypatch.setattr(accel, "cudnn_unsupported_reason",
                      accel.cudnn_shape_reason)

  def lower(fn, *args):
    checks = [export.DisabledSafetyCheck.custom_call(t) for t in (FWD, BWD)]
    text = export.export(jax.jit(fn), platforms=["cuda"],
                         disabled_checks=checks)(*args).mlir_module()
    return text, collections.Counter(re.findall(r"custom_call @([\w$]+)",
                                                text))
  return lower


def _dense_masks(text, q_len, kv_len):
  return re.findall(rf"tensor<[0-9x]*{q_len}x{kv_len}xi1>", text)


@pytest.mark.parametrize("causal", [False, True])
def test_key_prefix_attention_lowers_to_cudnn_flash(cuda_lowering, causal):
  B, S, H, D = 2, len(IDS), 4, 64
  x = jax.ShapeDtypeStruct((B, S, H, D), jnp.bfloat16)
  valid = jax.ShapeDtypeStruct((B, S), bool)

  def loss(q, k, v, valid):
    o = accel.attend_key_prefixes(q, k, v, GroupMask(IDS, IDS, valid, causal),
                                  implementation="cudnn")
    return jnp.sum(o.astype(jnp.float32) ** 2)

  text, calls = cuda_lowering(jax.value_and_grad(loss, argnums=(0, 1, 2)),
                              x, x, x, valid)
  groups = len(np.unique(IDS)) if causal else 1
  assert calls[FWD] == groups and calls[BWD] == groups, calls
  assert not _dense_masks(text, S, S)


def test_training_gradient_with_cudnn_lowers_for_cuda(cuda_lowering):
  """The model's gradient in bfloat16 with attention_impl='cudnn': every
  attention of the layer scan is a cuDNN call, forward and backward."""
  c = tiny_config()
  c.model.attention_mask = "context_causal"
  c.model.attention_impl = "cudnn"
  c.model.compute_dtype = "bfloat16"
  graphdef, params = init_model(c)
  batch = batch_lib.random_batch(c, 0, 2)
  keys = jax.random.split(jax.random.key(0), 2)
  text, calls = cuda_lowering(
      lambda p, b, k: compute_grads(p, b, k, graphdef=graphdef, config=c),
      params, batch, keys)
  groups = c.scene.max_shots + 1           # the global prompt and 3 shots
  assert calls[FWD] == groups and calls[BWD] == groups, calls
  S = SceneGeometry.from_config(c).seq_len
  assert not _dense_masks(text, S, S)
