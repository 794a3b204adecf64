"""Scene semantics of the whole model: padding, causal truncation, masks.

Every check compares two forwards of the same random-init parameters (no
zero-init, so every path carries signal); the tests also assert that the
opposite setting *does* change the outputs, so they cannot pass vacuously.
"""
import jax
import numpy as np
import pytest
from flax import nnx

from _util import tiny_config
from lct_jax import batch as batch_lib
from lct_jax.model import MMDiT


def make_model(config, params=None):
  model = MMDiT(config, rngs=nnx.Rngs(0))
  if params is not None:
    graphdef, _ = nnx.split(model, nnx.Param)
    model = nnx.merge(graphdef, params)
  return model


def params_of(model):
  return nnx.to_pure_dict(nnx.split(model, nnx.Param)[1])


_JITTED = {}


def forward(model, b, t):
  """Jitted forward, one compilation per (graphdef, shapes)."""
  graphdef, params = nnx.split(model, nnx.Param)
  fn = _JITTED.setdefault(graphdef, jax.jit(
      lambda p, *args: nnx.merge(graphdef, p)(*args)))
  return np.asarray(fn(nnx.to_pure_dict(params), b["latents"], t, b["text"],
                       b["text_len"], b["num_frames"]))


def scene(config, num_frames, text_len, seed=0):
  b = batch_lib.random_batch(config, seed, len(num_frames))
  b["num_frames"] = np.asarray(num_frames, np.int32)
  b["text_len"] = np.asarray(text_len, np.int32)
  return b


def close(a, b, tol=1e-5):
  return np.max(np.abs(a - b)) <= tol * max(np.max(np.abs(b)), 1e-6)


@pytest.fixture(scope="module")
def causal_setup():
  c = tiny_config()
  c.model.attention_mask = "context_causal"
  model = make_model(c)
  return c, model


def test_padding_is_never_attended(causal_setup):
  for mask in ("bidirectional", "context_causal"):
    c = tiny_config()
    c.model.attention_mask = mask
    model = make_model(c, params_of(causal_setup[1]))
    b = scene(c, [[3, 1, 0], [2, 0, 0]], [[2, 4, 1, 0], [0, 3, 0, 0]])
    t = np.array([[0.3, 0.7, 0.5], [0.9, 0.2, 0.4]], np.float32)
    out = forward(model, b, t)
    p = dict(b)
    rng = np.random.default_rng(5)
    # Scramble everything that is padding: frames past a shot's length,
    # padded shots, text past each group's length, padded shots' t.
    lat = b["latents"].copy()
    fmask = np.arange(3)[None, None] < b["num_frames"][..., None]
    lat[~fmask] = rng.standard_normal(lat[~fmask].shape)
    p["latents"] = lat
    tmask = np.arange(4)[None, None] < b["text_len"][..., None]
    p["text"] = np.where(tmask, b["text"], rng.integers(2, 32, b["text"].shape))
    t2 = np.where(b["num_frames"] > 0, t, 0.123).astype(np.float32)
    out2 = forward(model, p, t2)
    assert np.array_equal(out[fmask], out2[fmask]), mask
    # ...while a real token does matter.
    p["text"] = b["text"].copy()
    p["text"][0, 1, 0] = (p["text"][0, 1, 0] + 1) % 32
    assert not close(forward(model, p, t2)[fmask], out[fmask])


def test_causal_group_equals_truncated_scene(causal_setup):
  c, model = causal_setup
  b = scene(c, [[3, 1, 2]], [[3, 2, 4, 1]], seed=1)
  t = np.array([[0.2, 0.6, 0.9]], np.float32)
  full = forward(model, b, t)
  for k in (1, 2):
    # The truncated scene, at its own (smaller) static shapes.
    ck = tiny_config(max_shots=k)
    ck.model.attention_mask = "context_causal"
    mk = make_model(ck, params_of(model))
    bk = {"latents": b["latents"][:, :k], "num_frames": b["num_frames"][:, :k],
          "text": b["text"][:, :k + 1], "text_len": b["text_len"][:, :k + 1]}
    trunc = forward(mk, bk, t[:, :k])
    for s in range(k):
      n = b["num_frames"][0, s]
      assert close(full[0, s, :n], trunc[0, s, :n]), (k, s)


def test_bidirectional_truncation_changes_outputs(causal_setup):
  """The counter-check: without the causal mask later shots do matter."""
  c = tiny_config()
  model = make_model(c, params_of(causal_setup[1]))
  b = scene(c, [[3, 1, 2]], [[3, 2, 4, 1]], seed=1)
  t = np.array([[0.2, 0.6, 0.9]], np.float32)
  full = forward(model, b, t)
  bt = dict(b, num_frames=np.array([[3, 0, 0]], np.int32),
            text_len=np.array([[3, 2, 0, 0]], np.int32))
  assert not close(full[0, 0], forward(model, bt, t)[0, 0])


def test_later_shot_changes_leave_earlier_groups_alone(causal_setup):
  c, model = causal_setup
  b = scene(c, [[3, 2, 3]], [[2, 3, 1, 4]], seed=2)
  t = np.array([[0.1, 0.5, 0.8]], np.float32)
  out = forward(model, b, t)
  p = dict(b, latents=b["latents"].copy(), text=b["text"].copy())
  p["latents"][0, 2] += 1.0              # shot 3's video
  p["text"][0, 3] = (p["text"][0, 3] + 3) % 32   # shot 3's prompt
  t2 = t.copy(); t2[0, 2] = 0.05         # shot 3's timestep
  out2 = forward(model, p, t2)
  assert close(out[0, :2], out2[0, :2])
  assert not close(out[0, 2], out2[0, 2])


def test_single_group_masks_coincide(causal_setup):
  """One shot and an empty global prompt: every real token is in group 1."""
  c = tiny_config()
  model_bi = make_model(c, params_of(causal_setup[1]))
  model_ca = causal_setup[1]
  b = scene(c, [[3, 0, 0]], [[0, 4, 0, 0]], seed=3)
  t = np.array([[0.4, 0.0, 0.0]], np.float32)
  assert np.array_equal(forward(model_bi, b, t)[0, 0],
                        forward(model_ca, b, t)[0, 0])
  # With a global prompt (two groups) the masks differ.
  b2 = dict(b, text_len=np.array([[3, 4, 0, 0]], np.int32))
  assert not close(forward(model_bi, b2, t)[0, 0],
                   forward(model_ca, b2, t)[0, 0])
