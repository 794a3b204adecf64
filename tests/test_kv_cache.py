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


def test_stochastic_sampler_cached_equals_recomputation(setup):
  # Its fresh noise is a function of each shot's seed: the same in the
  # cached and the recomputed mode, and not the ODE's result.
  c, sampler, scene = setup
  noisy = Sampler(c, sampler.graphdef, sampler.params, steps=3, shift=2.0,
                  cfg_scale=2.5, t_c=0.3, eta=1.0)
  cached = noisy.causal(scene)
  recomputed = noisy.bidirectional_ar(scene)
  assert max(rel_err(a, b) for a, b in zip(cached, recomputed)) <= 1e-5
  assert rel_err(cached[0], sampler.causal(scene)[0]) > 1e-3


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


def test_cache_with_dummy_tokens_embeddings_and_legacy_layout():
  """The other layouts and options: a real global dummy block, given text
  embeddings with pooled vectors, the token refiner, and
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
    for j in range(3):
      shot = lambda x, g=0: x[:, j + g:j + g + 1]
      v, kv = mdl(shot(b["latents"]), shot(t), shot(b["text"], 1),
                  shot(b["text_len"], 1), shot(b["num_frames"]),
                  shot(b["pooled"], 1), cache=cache, kv_out=True)
      if j < 2:
        cache = cache.write(j, kv, b["text_len"][:, j + 1],
                            b["num_frames"][:, j])
    return v[:, 0]

  full = jax.jit(lambda p, b, t: nnx.merge(graphdef, p)(
      b["latents"], t, b["text"], b["text_len"], b["num_frames"],
      pooled_BxGxP=b["pooled"]))
  params = nnx.to_pure_dict(params)
  want = np.asarray(full(params, b, t))[:, 2]
  got = np.asarray(jax.jit(cached)(params, b, t))
  for i, n in enumerate(b["num_frames"][:, 2]):
    assert rel_err(got[i, :n], want[i, :n]) <= 1e-5


def hunyuan_shaped_config():
  """Dual- and single-stream blocks, the token refiner, given text
  embeddings with pooled vectors, embedded guidance: HunyuanVideo's
  structure at tiny sizes."""
  c = tiny_config()
  m = c.model
  m.attention_mask = "context_causal"
  m.num_single_layers, m.num_refiner_layers = 2, 1
  m.text_mode, m.text_embed_dim, m.pooled_dim = "embeddings", 12, 6
  m.guidance_embeds = True
  return c


def embedding_scene(c, seed: int = 0):
  """`three_shot_scene`'s shapes (3, 1 and 2 frames) with random text
  embeddings and pooled vectors."""
  rng = np.random.default_rng(seed)
  L, E, P = c.scene.max_text_len, c.model.text_embed_dim, c.model.pooled_dim
  emb = lambda: rng.standard_normal((L, E)).astype(np.float32)
  pooled = lambda: rng.standard_normal(P).astype(np.float32)
  shots = [Shot(emb(), 4, 3, pooled=pooled(), seed=10),
           Shot(emb(), 2, 1, pooled=pooled(), seed=11),
           Shot(emb(), 3, 2, pooled=pooled(), seed=12)]
  return Scene(emb(), 3, shots, pooled=pooled())


@pytest.mark.parametrize("mesh_shape", [None, (1, 1, 4, 2)])
def test_hunyuan_shaped_cached_generation_equals_recomputation(mesh_shape):
  """The contract for a model with single-stream blocks and a token
  refiner, on one device and with the tokens over a 'context' axis of 4
  (heads over 'tensor' 2)."""
  from lct_jax.parallel import make_mesh
  c = hunyuan_shaped_config()
  c.model.context_strategy = "ring"
  graphdef, params = nnx.split(MMDiT(c, rngs=nnx.Rngs(7)), nnx.Param)
  mesh = None if mesh_shape is None else make_mesh(
      dict(zip(("data", "fsdp", "context", "tensor"), mesh_shape)))
  sampler = Sampler(c, graphdef, nnx.to_pure_dict(params), steps=2,
                    shift=2.0, cfg_scale=2.5, t_c=0.3, guidance=3.0,
                    mesh=mesh)
  scene = embedding_scene(c)
  cached = sampler.causal(scene)
  recomputed = sampler.bidirectional_ar(scene)
  errs = [rel_err(a, b) for a, b in zip(cached, recomputed)]
  assert max(errs) <= 1e-5, errs
  # Not vacuous: the single-stream blocks' history reaches the last shot.
  other = Scene(scene.text, scene.text_len,
                [Shot(scene.shots[0].text + 1.0, 4, 3,
                      pooled=scene.shots[0].pooled, seed=10)]
                + scene.shots[1:], pooled=scene.pooled)
  assert rel_err(sampler.causal(other)[2], cached[2]) > 1e-3


def test_cache_holds_every_layer_of_every_block_kind():
  c = hunyuan_shaped_config()
  model = MMDiT(c, rngs=nnx.Rngs(0))
  L, E = c.scene.max_text_len, c.model.text_embed_dim
  cache = kv_cache.init_cache(model, np.zeros((1, L, E), np.float32),
                              np.int32([2]), np.zeros((1, 6), np.float32),
                              capacity=2, guidance_B=np.float32([1.0]))
  assert cache.kv.vid_k.shape[0] == c.model.depth + 2
  assert cache.kv.txt_k.shape[:3] == (c.model.depth + 2, 1, 3)


def test_forward_against_a_cache_needs_the_causal_mask():
  c = tiny_config()
  model = MMDiT(c, rngs=nnx.Rngs(0))           # bidirectional
  c2 = tiny_config()
  c2.model.attention_mask = "context_causal"
  cache = kv_cache.init_cache(MMDiT(c2, rngs=nnx.Rngs(0)),
                              np.zeros((1, 4), np.int32), np.int32([2]),
                              capacity=2)
  z = np.zeros((1, 1, 3, 4, 4, 2), np.float32)
  with pytest.raises(ValueError, match="context_causal"):
    model(z, np.zeros((1, 1), np.float32), np.zeros((1, 1, 4), np.int32),
          np.int32([[2]]), np.int32([[3]]), cache=cache)


@pytest.mark.parametrize("change, named", [
    (dict(depth=3), "depth 2 \\(cache\\) vs 3"),
    (dict(depth=1, num_single_layers=1), "num_single_layers 0 \\(cache\\) vs 1"),
    (dict(width=64, num_heads=4), "num_heads 2 \\(cache\\) vs 4"),
])
def test_a_cache_of_another_model_is_refused_by_name(change, named):
  """Same layer count, other block kinds, or another head split: each a
  clear error naming the difference, not a shape error deep in a scan."""
  c = tiny_config()
  c.model.attention_mask = "context_causal"
  assert (c.model.depth, c.model.num_heads, c.model.head_dim) == (2, 2, 16)
  cache = kv_cache.init_cache(MMDiT(c, rngs=nnx.Rngs(0)),
                              np.zeros((1, 4), np.int32), np.int32([2]),
                              capacity=2)
  for k, v in change.items():
    setattr(c.model, k, v)
  other = MMDiT(c, rngs=nnx.Rngs(0))
  z = np.zeros((1, 1, 3, 4, 4, 2), np.float32)
  with pytest.raises(ValueError, match=named):
    other(z, np.zeros((1, 1), np.float32), np.zeros((1, 1, 4), np.int32),
          np.int32([[2]]), np.int32([[3]]), cache=cache)


def test_the_jitted_sampler_refuses_another_models_cache_before_tracing(
    monkeypatch):
  """The cached-shot sampler (`causal.jitted`, through `Sampler`) checks
  the cache's model eagerly: a clear error naming the difference, raised
  outside any trace."""
  import jax
  c = tiny_config()
  c.model.attention_mask = "context_causal"

  def sampler_of(c):
    graphdef, params = nnx.split(MMDiT(c, rngs=nnx.Rngs(0)), nnx.Param)
    return Sampler(c, graphdef, nnx.to_pure_dict(params), steps=2)

  scene = three_shot_scene(c)
  cache = sampler_of(c).new_cache(scene)
  c.model.depth = 3
  other = sampler_of(c)
  traced = []
  check = kv_cache.KVCache.check_model

  def spy(cache, model):
    traced.append(isinstance(cache.num_frames, jax.core.Tracer))
    return check(cache, model)

  monkeypatch.setattr(kv_cache.KVCache, "check_model", spy)
  shot = scene.shots[0]
  with pytest.raises(ValueError, match="depth 2 \\(cache\\) vs 3"):
    other.denoise_cached(cache, [], shot)
  with pytest.raises(ValueError, match="depth 2 \\(cache\\) vs 3"):
    other.encode_cached(cache, 0, [], shot,
                        np.zeros(other.shot_shape, np.float32))
  assert traced == [False, False]


def test_a_rollout_longer_than_the_window(setup):
  """More shots than the model's window (experiment 3's rollouts): one cache
  slot per shot, each shot conditioned on the window before it. Slots
  outside a shot's pool are absent from its layout, so a larger cache
  changes nothing for the shots that fit the default one, and the default
  cache refuses the long scene by name."""
  from lct_jax.evaluate import history_pools  # pylint: disable=g-import-not-at-top
  c, sampler, scene = setup
  window = c.scene.max_shots - 1
  shots = scene.shots + [Shot(s.text, s.text_len, s.num_frames,
                              seed=20 + i) for i, s in enumerate(scene.shots)]
  shots = [Shot(s.text, s.text_len, s.num_frames, seed=s.seed, history=p)
           for s, p in zip(shots, history_pools(len(shots), window))]
  long = Scene(scene.text, scene.text_len, shots)
  big = Sampler(c, sampler.graphdef, sampler.params, steps=3, shift=2.0,
                cfg_scale=2.5, t_c=0.3, capacity=len(shots) - 1)
  rolled = big.causal(long)
  short = sampler.causal(Scene(scene.text, scene.text_len, shots[:3]))
  assert max(rel_err(a, b) for a, b in zip(rolled[:3], short)) <= 1e-5
  assert all(np.isfinite(z).all() for z in rolled)
  with pytest.raises(ValueError, match="6 shots need 5 cache slots, but the "
                                       "cache holds 2"):
    sampler.causal(long)
