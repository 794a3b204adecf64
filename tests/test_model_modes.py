"""Model options beyond the default path: given embeddings, dummy tokens,
the legacy (no text RoPE) layout."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from _util import tiny_config
from lct_jax import batch as batch_lib
from lct_jax.model import MMDiT
from lct_jax.training import compute_grads, init_model


def run(config, batch, t, seed=0):
  model = MMDiT(config, rngs=nnx.Rngs(seed))
  graphdef, params = nnx.split(model, nnx.Param)
  fn = jax.jit(lambda p, b: nnx.merge(graphdef, p)(
      b["latents"], t, b["text"], b["text_len"], b["num_frames"],
      pooled_BxGxP=b.get("pooled")))
  return np.asarray(fn(nnx.to_pure_dict(params), batch))


def test_embeddings_mode_uses_text_and_pooled_vectors():
  c = tiny_config()
  c.model.text_mode, c.model.text_embed_dim, c.model.pooled_dim = (
      "embeddings", 24, 12)
  b = batch_lib.random_batch(c, 0, 2, min_shots=2)
  assert b["text"].shape == (2, 4, 4, 24) and b["pooled"].shape == (2, 4, 12)
  t = jnp.full((2, 3), 0.5)
  out = run(c, b, t)
  fm = np.arange(3)[None, None] < b["num_frames"][..., None]
  for key in ("text", "pooled"):
    changed = dict(b, **{key: b[key] + 0.5})
    assert not np.allclose(run(c, changed, t)[fm], out[fm]), key
  # Gradients reach the text projection.
  graphdef, params = init_model(c)
  _, _, g = jax.jit(lambda p, b, k: compute_grads(
      p, b, k, graphdef=graphdef, config=c))(
          params, b, jax.random.split(jax.random.key(0), 2))
  assert float(jnp.abs(g["context_embedder"]["proj_in"]["kernel"]).max()) > 0
  assert float(jnp.abs(
      g["time_text_embed"]["text_embedder"]["linear_1"]["kernel"]).max()) > 0


def test_global_dummy_tokens_are_real_tokens():
  c_off = tiny_config()
  c_on = tiny_config(global_dummy_tokens=True)
  b = batch_lib.random_batch(c_off, 1, 2, min_shots=2)
  t = jnp.full((2, 3), 0.4)
  off, on = run(c_off, b, t), run(c_on, b, t)
  assert on.shape == off.shape == b["latents"].shape
  fm = np.arange(3)[None, None] < b["num_frames"][..., None]
  # Same parameters, same positions for the shots: only the extra (dummy)
  # keys differ, and they do change what the shots attend to.
  assert not np.allclose(on[fm], off[fm])
  assert np.all(np.isfinite(on))


def test_legacy_layout_gives_text_no_position():
  """text_rope=False: text keys carry no rotation (and pooled text is a
  mean), so permuting a prompt's tokens changes nothing; with text RoPE the
  order matters. A property, independent of the layout code."""
  b = batch_lib.random_batch(tiny_config(), 2, 1)
  b["num_frames"] = np.array([[3, 2, 0]], np.int32)
  b["text_len"] = np.array([[4, 4, 3, 0]], np.int32)
  perm = dict(b, text=b["text"].copy())
  perm["text"][0, 1] = b["text"][0, 1, ::-1]          # shot 1's prompt
  t = jnp.array([[0.3, 0.6, 0.0]])
  fm = np.arange(3)[None, None] < b["num_frames"][..., None]
  for text_rope in (False, True):
    c = tiny_config()
    c.model.text_rope = text_rope
    same = np.allclose(run(c, b, t)[fm], run(c, perm, t)[fm], atol=1e-5)
    assert same == (not text_rope), text_rope
