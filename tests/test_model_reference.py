"""The scene model against an independent single-shot reference (numpy f64).

`single_shot_reference` re-implements the spec of docs/design.md section 5 from
scratch with the model's parameter values: patchify, c = timestep embed +
pooled text, adaLN-Zero dual-stream blocks with RMS QK norm, 3D RoPE as
complex rotation, one softmax attention over [video ; text], final adaLN,
unpatchify. A one-shot scene (padded frames, padded text, padded shot slots,
empty global prompt) through the scene model must match it.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from _util import tiny_config
from lct_jax import batch as batch_lib
from lct_jax.layout import build_layout
from lct_jax.model import MMDiT
from lct_jax.model.layers import layer_norm, modulate


def silu(x):
  return x / (1 + np.exp(-x))


def gelu_tanh(x):
  return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def ln(x, eps=1e-6):
  mu = x.mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)


def rms(x, w, eps=1e-6):
  return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def lin(p, x):
  return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"],
                                                              np.float64)


def rope(x_SxHxD, pos_Sx3, axes, theta):
  z = x_SxHxD[..., 0::2] + 1j * x_SxHxD[..., 1::2]
  ang = np.concatenate([pos_Sx3[:, a:a + 1] * theta ** (-np.arange(0, d, 2) / d)
                        for a, d in enumerate(axes)], -1)
  z = z * np.exp(1j * ang)[:, None, :]
  out = np.empty_like(x_SxHxD)
  out[..., 0::2], out[..., 1::2] = z.real, z.imag
  return out


def single_shot_reference(P, cfg, latents_FxHxWxC, tokens_L, t):
  m = cfg.model
  pt, p, H, Dh = m.patch_t, m.patch, m.num_heads, m.head_dim
  F, Hh, W, C = latents_FxHxWxC.shape
  fp, hp, wp = F // pt, Hh // p, W // p
  x = latents_FxHxWxC.astype(np.float64).reshape(fp, pt, hp, p, wp, p, C)
  x = x.transpose(0, 2, 4, 6, 1, 3, 5).reshape(fp * hp * wp, -1)
  vid = lin(P["x_embedder"]["proj"], x)
  emb = np.asarray(P["context_embedder"]["token_embedder"]["embedding"],
                   np.float64)[tokens_L]
  txt = lin(P["context_embedder"]["proj_in"], emb)
  half = 128
  freqs = np.exp(-math.log(10000.0) * np.arange(half) / half)
  sinus = np.concatenate([np.cos(t * 1000 * freqs), np.sin(t * 1000 * freqs)])
  tte = P["time_text_embed"]
  mlp = lambda q, v: lin(q["linear_2"], silu(lin(q["linear_1"], v)))
  c = mlp(tte["timestep_embedder"], sinus) + mlp(tte["text_embedder"],
                                                 emb.mean(0))
  L = len(tokens_L)
  f, y, xx = np.meshgrid(np.arange(fp), np.arange(hp), np.arange(wp),
                         indexing="ij")
  pos_v = np.stack([L + f, L + y, L + xx], -1).reshape(-1, 3)
  pos_t = np.repeat(np.arange(L)[:, None], 3, 1)
  blocks = P["transformer_blocks"]
  for l in range(m.depth):
    B = jax.tree.map(lambda a: np.asarray(a[l], np.float64), blocks)
    a = B["attn"]
    mv = np.split(lin(B["norm1"]["linear"], silu(c)), 6)
    mt = np.split(lin(B["norm1_context"]["linear"], silu(c)), 6)
    hv = ln(vid) * (1 + mv[1]) + mv[0]
    ht = ln(txt) * (1 + mt[1]) + mt[0]
    heads = lambda z: z.reshape(z.shape[0], H, Dh)
    qv = rope(rms(heads(lin(a["to_q"], hv)), a["norm_q"]["weight"]), pos_v,
              m.rope_axes_dim, m.rope_theta)
    kv = rope(rms(heads(lin(a["to_k"], hv)), a["norm_k"]["weight"]), pos_v,
              m.rope_axes_dim, m.rope_theta)
    qt = rope(rms(heads(lin(a["add_q_proj"], ht)), a["norm_added_q"]["weight"]),
              pos_t, m.rope_axes_dim, m.rope_theta)
    kt = rope(rms(heads(lin(a["add_k_proj"], ht)), a["norm_added_k"]["weight"]),
              pos_t, m.rope_axes_dim, m.rope_theta)
    q, k = np.concatenate([qv, qt]), np.concatenate([kv, kt])
    v = np.concatenate([heads(lin(a["to_v"], hv)), heads(lin(a["add_v_proj"],
                                                             ht))])
    s = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(Dh)
    w = np.exp(s - s.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    o = np.einsum("hqk,khd->qhd", w, v).reshape(len(q), -1)
    nv = len(vid)
    vid = vid + mv[2] * lin(a["to_out_0"], o[:nv])
    txt = txt + mt[2] * lin(a["to_add_out"], o[nv:])
    ffn = lambda q_, z: lin(q_["net_2"], gelu_tanh(lin(q_["net_0_proj"], z)))
    vid = vid + mv[5] * ffn(B["ff"], ln(vid) * (1 + mv[4]) + mv[3])
    txt = txt + mt[5] * ffn(B["ff_context"], ln(txt) * (1 + mt[4]) + mt[3])
  scale, shift = np.split(lin(P["norm_out"]["linear"], silu(c)), 2)
  out = lin(P["proj_out"], ln(vid) * (1 + scale) + shift)
  out = out.reshape(fp, hp, wp, -1, pt, p, p).transpose(0, 4, 1, 5, 2, 6, 3)
  return out.reshape(F, Hh, W, -1)


def test_one_shot_scene_equals_single_shot_model():
  c = tiny_config()
  model = MMDiT(c, rngs=nnx.Rngs(3))
  P = nnx.to_pure_dict(nnx.split(model, nnx.Param)[1])
  b = batch_lib.random_batch(c, 7, 1)
  b["num_frames"] = np.array([[2, 0, 0]], np.int32)       # 1 of 3 frames padded
  b["text_len"] = np.array([[0, 3, 0, 0]], np.int32)      # no global prompt
  t = np.array([[0.37, 0.0, 0.0]], np.float32)
  out = np.asarray(jax.jit(lambda *a: model(*a))(
      b["latents"], t, b["text"], b["text_len"], b["num_frames"]))
  ref = single_shot_reference(P, c, b["latents"][0, 0, :2], b["text"][0, 1, :3],
                              0.37)
  err = np.max(np.abs(out[0, 0, :2] - ref)) / np.max(np.abs(ref))
  assert err < 1e-4, err


def test_timestep_changes_only_its_groups_conditioning():
  c = tiny_config()
  model = MMDiT(c, rngs=nnx.Rngs(0))
  b = batch_lib.random_batch(c, 0, 2, min_shots=3)
  t = jnp.array([[0.2, 0.5, 0.8], [0.1, 0.4, 0.6]])
  t2 = t.at[:, 1].set(0.95)                               # shot 2 = group 2
  layout = build_layout(model.geom, b["text_len"], b["num_frames"])
  pooled = model.pooled_text(jnp.asarray(b["text"]), b["text_len"], None)
  ctx, ctx2 = (model.block_inputs(
      model.conditioning(model.group_timesteps(t_), pooled), model.geom,
      layout) for t_ in (t, t2))
  # Per-group vectors: only group 2 differs, for text and video.
  dv = np.any(ctx.silu_c_vid_BxVxD != ctx2.silu_c_vid_BxVxD, axis=(0, 2))
  dt = np.any(ctx.silu_c_txt_BxGxD != ctx2.silu_c_txt_BxGxD, axis=(0, 2))
  assert dv.tolist() == [False, True, False]             # video slots: groups 1..3
  assert dt.tolist() == [False, False, True, False]      # text groups 0..3
  # Per token: the modulated stream changes exactly on group-2 tokens.
  block0 = jax.tree.map(lambda a: a, model.transformer_blocks)
  gd, st = nnx.split(block0)
  blk = nnx.merge(gd, jax.tree.map(lambda a: a[0], st))
  x = jax.random.normal(jax.random.key(0), (2, 3, model.geom.tokens_per_slot,
                                             c.model.width))
  def mod(ctx_):
    shift, scale = blk.norm1(ctx_.silu_c_vid_BxVxD)[:2]
    return np.asarray(modulate(layer_norm(x), shift, scale))
  changed_slots = np.any(mod(ctx) != mod(ctx2), axis=(0, 2, 3))
  assert changed_slots.tolist() == [False, True, False]
  # Sanity: the scene's timestep actually enters the conditioning.
  assert np.any(ctx.silu_c_vid_BxVxD[:, 1] != ctx2.silu_c_vid_BxVxD[:, 1])
