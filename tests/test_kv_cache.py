"""The KV cache contract: causal generation with the cache equals
recomputation without it under the context-causal mask (float32, relative
error <= 1e-5), for 3 shots of different lengths including an image shot,
with text CFG; and with a history pool that skips a shot.

The reference (`Sampler.bidirectional_ar`) re-runs the whole scene through
`MMDiT.__call__` at every Euler step with the history as t_c conditions: an
independent computation of the same numbers (full sequence, no cache, no
pool re-layout code).
"""
import numpy as np
import pytest
from flax import nnx

from _util import three_shot_scene, tiny_config
from lct_jax.model import MMDiT
from lct_jax.model import kv_cache
from lct_jax.sampling import Sampler, Scene, Shot


def rel_err(a, b):
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-6))


@pytest.fixture(scope="module")
def setup():
  c = tiny_config()                      # 3 shot slots of up to 3 frames
  c.model.attention_mask = "context_causal"
  model = MMDiT(c, rngs=nnx.Rngs(3))
  graphdef, params = nnx.split(model, nnx.Param)
  params = nnx.to_pure_dict(params)
  sampler = Sampler(c, graphdef, params, steps=3, shift=2.0, cfg_scale=2.5,
                    t_c=0.3)
  return c, sampler, three_shot_scene(c)


def test_cached_generation_equals_recomputation(setup):
  _, sampler, scene = setup
  cached = sampler.causal(scene)
  recomputed = sampler.bidirectional_ar(scene)
  errs = [rel_err(a, b) for a, b in zip(cached, recomputed)]
  print("cached vs recomputed relative error per shot:", errs)
  assert max(errs) <= 1e-5, errs
  # Padded frames are zero; real frames are not.
  assert np.all(cached[1][1:] == 0) and np.abs(cached[1][0]).max() > 0
  # Not vacuous: the history does reach the last shot through the cache.
  other = Scene(scene.text, scene.text_len,
                [Shot(scene.shots[0].text, 4, 3, seed=99)] + scene.shots[1:])
  assert rel_err(sampler.causal(other)[2], cached[2]) > 1e-3


def test_history_pool_skipping_a_shot(setup):
  _, sampler, scene = setup
  shots = list(scene.shots)
  shots[2] = Shot(shots[2].text, shots[2].text_len, 2, seed=12, history=(0,))
  pooled = Scene(scene.text, scene.text_len, shots)
  cached = sampler.causal(pooled)
  recomputed = sampler.bidirectional_ar(pooled)
  assert rel_err(cached[2], recomputed[2]) <= 1e-5
  full = sampler.causal(scene)
  assert rel_err(cached[2], full[2]) > 1e-3        # shot 1 was left out


def test_given_history_comes_back_bit_identical(setup):
  c, sampler, scene = setup
  given = np.random.default_rng(1).standard_normal(
      (3, 4, 4, c.model.in_channels)).astype(np.float32)
  shots = [Shot(scene.shots[0].text, 4, 3, latents=given, t_c=0.2, seed=1),
           *scene.shots[1:]]
  out = sampler.causal(Scene(scene.text, scene.text_len, shots))
  assert out[0].tobytes() == given.tobytes()


def test_single_stream_layers_are_refused(setup):
  c = setup[0].copy_and_resolve_references()
  c.model.num_single_layers = 2

  class Fake:
    config = c
  with pytest.raises(NotImplementedError, match="num_single_layers"):
    kv_cache.check_supported(Fake())


def test_director_matches_causal_generation(setup):
  from lct_jax.sampling.interactive import Director
  _, sampler, scene = setup
  prompts = {f"p{i}": s for i, s in enumerate(scene.shots)}
  prompts["global"] = scene
  encode = lambda p: (prompts[p].text, prompts[p].text_len, None)
  d = Director(sampler, "global", encode=encode)
  first = d.propose("p0", frames=3, seed=99)
  again = d.propose("p0", frames=3, seed=10)          # regenerate: new seed
  assert rel_err(first.latents, again.latents) > 1e-3
  d.accept(again)
  d.accept(d.propose("p1", frames=1, seed=11))
  last = d.propose("p2", frames=2, seed=12)
  want = sampler.causal(scene)
  for got, w in zip([t.latents for t in d.history] + [last.latents], want):
    assert rel_err(got, w) <= 1e-6
  # Choosing the history: shot 0 only, as a scene file's "history": [0].
  pooled = Scene(scene.text, scene.text_len, scene.shots[:2] + [
      Shot(scene.shots[2].text, 3, 2, seed=12, history=(0,))])
  got = d.propose("p2", frames=2, seed=12, history=[0]).latents
  assert rel_err(got, sampler.causal(pooled)[2]) <= 1e-6
  with pytest.raises(ValueError, match="not accepted"):
    d.propose("p2", history=[5])


@pytest.mark.parametrize("with_global", [False, True])
def test_cache_with_dummy_tokens_embeddings_and_legacy_layout(with_global):
  """The other layouts and options: a real global dummy block, given text
  embeddings with pooled vectors (each shot's alone, or plus the global
  prompt's, which the cache must then carry), the token refiner, and
  text_rope=False; one velocity evaluation of the last shot against a cache
  of two, versus the full forward."""
  import jax
  import jax.numpy as jnp
  from lct_jax import batch as batch_lib
  c = tiny_config(global_dummy_tokens=True)
  m = c.model
  m.attention_mask, m.text_rope = "context_causal", False
  m.text_mode, m.text_embed_dim, m.pooled_dim = "embeddings", 12, 6
  m.num_refiner_layers = 1
  m.pooled_text_with_global = with_global
  model = MMDiT(c, rngs=nnx.Rngs(4))
  graphdef, params = nnx.split(model, nnx.Param)
  b = batch_lib.random_batch(c, 5, 2, min_shots=3)
  b["num_frames"] = np.int32([[3, 1, 2], [1, 2, 3]])
  b["text_len"] = np.int32([[2, 4, 1, 3], [4, 1, 2, 4]])
  t = jnp.float32([[0.3, 0.5, 0.8], [0.1, 0.4, 0.9]])

  def cached(p, b, t):
    mdl = nnx.merge(graphdef, p)
    cache = kv_cache.init_cache(mdl, b["text"][:, 0], b["text_len"][:, 0],
                                b["pooled"][:, 0], capacity=2)
    pool = jnp.ones((2, 2), bool)
    for j in range(3):
      v, kv = kv_cache.forward_shot(
          mdl, cache, pool, b["latents"][:, j], t[:, j], b["text"][:, j + 1],
          b["text_len"][:, j + 1], b["num_frames"][:, j],
          b["pooled"][:, j + 1], collect_kv=j < 2)
      if j < 2:
        cache = cache.write(j, kv, b["text_len"][:, j + 1],
                            b["num_frames"][:, j])
    return v

  full = jax.jit(lambda p, b, t: nnx.merge(graphdef, p)(
      b["latents"], t, b["text"], b["text_len"], b["num_frames"],
      pooled_BxGxP=b["pooled"]))
  params = nnx.to_pure_dict(params)
  want = np.asarray(full(params, b, t))[:, 2]
  got = np.asarray(jax.jit(cached)(params, b, t))
  for i, n in enumerate(b["num_frames"][:, 2]):
    assert rel_err(got[i, :n], want[i, :n]) <= 1e-5
  if with_global:     # not vacuous: the global pooled vector reaches shots
    b2 = dict(b, pooled=np.asarray(b["pooled"]).copy())
    b2["pooled"][:, 0] += 1.0
    moved = np.asarray(full(params, b2, t))[:, 2]
    assert rel_err(moved[0, :1], want[0, :1]) > 1e-3
