"""Model FLOPs of a step against a hand count from the config's widths."""
from lct_jax import configlib
from lct_jax.layout import SceneGeometry
from lct_jax.model.flops import step_flops
from lct_jax.training import abstract_model


def hand_count(c):
  """Per scene, forward: each stream's linear layers per token, 2 FLOPs a
  weight, plus 4 S^2 (heads x head_dim) of attention per layer."""
  m, g = c.model, SceneGeometry.from_config(c)
  w, inner, hidden = m.width, m.num_heads * m.head_dim, int(m.width *
                                                           m.mlp_ratio)
  per_stream_layer = 3 * w * inner + inner * w + 2 * w * hidden
  video = g.video_len * (m.depth * per_stream_layer + g.patch_dim * w +
                         w * g.patch_dim)           # x_embedder, proj_out
  text = g.text_len * (m.depth * per_stream_layer + m.text_embed_dim * w)
  attention = 4 * g.seq_len ** 2 * inner * m.depth
  return 2 * (video + text), attention


def test_demo_flops_equal_the_hand_count():
  c = configlib.load("configs/demo.py")
  matmul, attention = hand_count(c)
  f = step_flops(c, abstract_model(c)[1])
  assert f.matmul == matmul
  assert f.attention == attention
  assert f.train_step == 3 * (matmul + attention) * c.train.batch_size


def test_3b_flops_equal_the_hand_count():
  c = configlib.load("configs/lct_3b.py")
  matmul, attention = hand_count(c)
  f = step_flops(c, abstract_model(c)[1], batch_size=1)
  assert f.matmul == matmul and f.attention == attention
  # 9 shots of 22,500 video tokens: attention is ~94% of the forward.
  assert 0.93 < attention / (matmul + attention) < 0.95
