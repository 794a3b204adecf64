"""Parity with the PyTorch baseline, diffusers' HunyuanVideoTransformer3DModel.

The reference is diffusers itself (the `parity` extra: torch 2.13.0 CPU and
diffusers): random tiny configs with every parameter random, random latents,
text embeddings with padding, pooled text and guidance. The Flax model in
the degenerate mode (one shot, text_rope=False) must match diffusers' forward
to 2e-5 in float32 (docs/design.md section 11); the conversion must round-trip.
"""
import json
import os

import numpy as np
import pytest

import _util

torch, diffusers = _util.parity_modules("torch", "diffusers")

import jax.numpy as jnp  # noqa: E402

from lct_jax.convert import folder, hunyuan, parity  # noqa: E402
from lct_jax.layout import (  # noqa: E402
    SceneGeometry, build_layout, rope_tables)
from lct_jax.layout.rope import frequencies  # noqa: E402

torch.set_num_threads(1)   # 2-core CI machines; JAX has the other core

TOL = 2e-5
# name: (diffusers config overrides, (frames, height, width), L, text lengths)
CASES = {
    "dual_only": (dict(num_layers=2, num_single_layers=0,
                       num_refiner_layers=0, guidance_embeds=False),
                  (3, 4, 6), 5, [5, 2]),
    "single_only": (dict(num_layers=1, num_single_layers=2,
                         num_refiner_layers=0, guidance_embeds=False),
                    (2, 4, 4), 4, [1, 3]),
    "refiner_guidance": (dict(num_layers=1, num_single_layers=0,
                              num_refiner_layers=2, guidance_embeds=True),
                         (2, 6, 4), 6, [3, 6]),
    "all_pt2_3heads": (dict(num_attention_heads=3, num_layers=2,
                            num_single_layers=1, num_refiner_layers=1,
                            guidance_embeds=True, patch_size_t=2,
                            out_channels=6, rope_axes_dim=[4, 4, 8],
                            mlp_ratio=3.0, text_embed_dim=20,
                            pooled_projection_dim=8),
                       (4, 4, 4), 7, [7, 1]),
}


def _case(name, seed=0):
  over, (f, h, w), L, lens = CASES[name]
  dconf = parity.tiny_diffusers_config(**over)
  config = parity.degenerate_config(dconf, frames=f, height=h, width=w,
                                    text_len=L)
  torch_model = parity.random_diffusers_model(dconf, seed)
  inputs = parity.random_inputs(config, lens, seed + 1)
  return dconf, config, torch_model, inputs


def _state_dict(torch_model):
  return {k: v.detach().numpy().copy()
          for k, v in torch_model.state_dict().items()}


@pytest.mark.parametrize("name", list(CASES))
def test_forward_matches_diffusers(name):
  _, config, torch_model, inputs = _case(name)
  params = hunyuan.import_state_dict(_state_dict(torch_model), config)
  ref = parity.diffusers_forward(torch_model, inputs, config)
  out = np.asarray(parity.flax_forward_fn(config, params)(inputs))
  assert out.shape == ref.shape
  err = float(np.max(np.abs(out - ref)))
  print(f"\n{name}: max abs diff {err:.2e} (max |ref| "
        f"{np.max(np.abs(ref)):.2f})")
  assert err <= TOL, (name, err)
  # Not vacuous: a different timestep moves the output far beyond TOL.
  moved = dict(inputs, t=inputs["t"] * 0.5)
  assert np.max(np.abs(parity.diffusers_forward(torch_model, moved, config)
                       - ref)) > 100 * TOL


@pytest.mark.parametrize("axes,theta,fhw,pt", [
    ((4, 6, 6), 256.0, (3, 4, 6), 1),
    ((16, 56, 56), 256.0, (9, 30, 52), 1),     # HunyuanVideo's bands
    ((8, 12, 12), 10000.0, (8, 16, 16), 2),
])
def test_rope_tables_match(axes, theta, fhw, pt):
  """Positions, frequencies and angles are bit-exact; cos/sin are each
  library's float32 cos/sin of the same angles (at most 1 ulp apart)."""
  # pylint: disable-next=g-import-not-at-top
  from diffusers.models.transformers import transformer_hunyuan_video as dhv
  F, H, W = fhw
  cos_ref, sin_ref = dhv.HunyuanVideoRotaryPosEmbed(2, pt, list(axes), theta)(
      torch.zeros(1, 1, F, H, W))
  dconf = parity.tiny_diffusers_config(
      attention_head_dim=sum(axes), rope_axes_dim=list(axes),
      rope_theta=theta, patch_size_t=pt)
  config = parity.degenerate_config(dconf, frames=F, height=H, width=W,
                                    text_len=4)
  geom = SceneGeometry.from_config(config)
  layout = build_layout(geom, jnp.array([[0, 3]]), jnp.array([[F]]),
                        text_rope=False)
  Sv = geom.video_len
  pos = np.asarray(layout.pos_BxSx3[0, :Sv])
  cos, sin = (np.asarray(a[0, :Sv]) for a in rope_tables(
      layout.pos_BxSx3, axes, theta))
  # diffusers: [S, D] with each pair's value repeated (interleaved pairs).
  assert cos_ref.shape == (Sv, sum(axes))
  freq_K, axis_K = frequencies(axes, theta)
  angle = pos[:, axis_K].astype(np.float32) * freq_K
  ref_c, ref_s = cos_ref.numpy(), sin_ref.numpy()
  np.testing.assert_array_equal(
      np.repeat(torch.cos(torch.from_numpy(angle)).numpy(), 2, -1), ref_c)
  np.testing.assert_array_equal(
      np.repeat(torch.sin(torch.from_numpy(angle)).numpy(), 2, -1), ref_s)
  eps = np.finfo(np.float32).eps
  np.testing.assert_allclose(np.repeat(cos, 2, -1), ref_c, rtol=0, atol=eps)
  np.testing.assert_allclose(np.repeat(sin, 2, -1), ref_s, rtol=0, atol=eps)
  # Text carries no rotation in the legacy layout: position 0 everywhere.
  assert not np.any(np.asarray(layout.pos_BxSx3[0, Sv:]))


@pytest.mark.parametrize("name", ["dual_only", "all_pt2_3heads"])
def test_export_then_import_is_identity(name):
  _, config, torch_model, _ = _case(name, seed=3)
  sd = _state_dict(torch_model)
  params = hunyuan.import_state_dict(sd, config)
  exported = hunyuan.export_state_dict(params, config)
  assert set(exported) == set(sd)
  for k, v in sd.items():
    if config.model.num_refiner_layers or not k.startswith(
        "context_embedder.time_text_embed."):
      np.testing.assert_array_equal(exported[k], v, err_msg=k)
  again = hunyuan.import_state_dict(exported, config)
  flat = lambda t: dict(hunyuan.flatten(t))
  a, b = flat(params), flat(again)
  assert set(a) == set(b)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=str(k))


def test_exported_weights_reproduce_diffusers_output(tmp_path):
  """A fresh diffusers model loads the export (strictly, and through a
  sharded from_pretrained folder) and gives the original output."""
  for name in ("dual_only", "all_pt2_3heads"):
    dconf, config, torch_model, inputs = _case(name, seed=5)
    ref = parity.diffusers_forward(torch_model, inputs, config)
    params = hunyuan.import_state_dict(_state_dict(torch_model), config)
    exported = hunyuan.export_state_dict(params, config)
    fresh = diffusers.HunyuanVideoTransformer3DModel(
        **{k: v for k, v in hunyuan.diffusers_config(config).items()
           if not k.startswith("_")})
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in
                           exported.items()}, strict=True)
    np.testing.assert_array_equal(
        parity.diffusers_forward(fresh.eval(), inputs, config), ref)
    out_dir = str(tmp_path / name)
    folder.save_folder(out_dir, hunyuan.diffusers_config(config), exported,
                       max_shard_bytes=20_000)
    assert os.path.exists(os.path.join(out_dir, folder.INDEX))
    loaded = diffusers.HunyuanVideoTransformer3DModel.from_pretrained(
        out_dir, local_files_only=True)
    np.testing.assert_array_equal(
        parity.diffusers_forward(loaded.eval(), inputs, config), ref)
    assert json.load(open(os.path.join(out_dir, "config.json")))[
        "num_layers"] == dconf["num_layers"]


def test_reads_folders_diffusers_writes(tmp_path):
  """save_pretrained (bfloat16, sharded) -> our safetensors reader."""
  dconf0, _, torch_model, _ = _case("refiner_guidance", seed=7)
  torch_model = torch_model.to(torch.bfloat16)
  torch_model.save_pretrained(str(tmp_path), max_shard_size="30KB")
  assert os.path.exists(tmp_path / folder.INDEX)
  dconf, sd = folder.load_folder(str(tmp_path))
  assert (hunyuan.config_from_diffusers(dconf).model.to_dict() ==
          hunyuan.config_from_diffusers(dconf0).model.to_dict())
  expected = {k: v.float().numpy() for k, v in
              torch_model.state_dict().items()}
  assert set(sd) == set(expected)
  for k, v in sd.items():
    assert str(v.dtype) == "bfloat16", k
    np.testing.assert_array_equal(v.astype(np.float32), expected[k],
                                  err_msg=k)


def test_full_size_hunyuanvideo_names_and_shapes():
  """The released HunyuanVideo config (diffusers' defaults, ~13B) converts:
  the key sets and shapes agree, checked on torch's meta device (no memory)."""
  config = hunyuan.config_from_diffusers({})
  with torch.device("meta"):
    model = diffusers.HunyuanVideoTransformer3DModel()
  theirs = {k: tuple(v.shape) for k, v in model.state_dict().items()}
  ours = {k: shape for k, (_, _, shape) in
          hunyuan.expected_keys(config).items()}
  assert ours == theirs
  n = sum(int(np.prod(s)) for s in ours.values())
  assert 12.5e9 < n < 13.5e9, n
