"""The VAE without torch: config checks, shape rules, the weight conversion,
checkpoints and the CLI, batch sharding, the tiling plan. Parity with
diffusers is tests/test_vae_parity.py."""
import os

import jax
import numpy as np
import pytest

from lct_jax import vae as V
from lct_jax.convert import __main__ as cli
from lct_jax.convert import folder
from lct_jax.convert import vae as vae_io
from lct_jax.parallel import make_mesh
from lct_jax.vae import checkpoint, convert, tiling

O0 = {"xla_backend_optimization_level": 0}   # compiles 2x faster on CPU


def dconf(**over):
  """A tiny diffusers config.json dict (2 blocks: compresses 2x in space and
  time though it declares 4x in time, as diffusers builds it)."""
  n = len(over.get("block_out_channels", (8, 16)))
  d = dict(block_out_channels=[8, 16], layers_per_block=1, latent_channels=4,
           norm_num_groups=4, spatial_compression_ratio=2,
           down_block_types=["HunyuanVideoDownBlock3D"] * n,
           up_block_types=["HunyuanVideoUpBlock3D"] * n,
           _class_name="AutoencoderKLHunyuanVideo", _diffusers_version="0.42")
  d.update(over)
  return d


def random_state_dict(config, seed=0):
  rng = np.random.default_rng(seed)
  return {k: rng.standard_normal(shape).astype(np.float32)
          for k, (_, shape) in convert.expected_keys(config).items()}


@pytest.fixture(scope="module")
def tiny():
  config = V.VAEConfig.from_diffusers(dconf())
  return config, random_state_dict(config)


# --- config ------------------------------------------------------------------
def test_real_config_compresses_8x_4x():
  c = V.VAEConfig.from_diffusers(V.VAEConfig().to_diffusers())
  assert c == V.VAEConfig()
  assert c.down_strides == ((1, 2, 2), (2, 2, 2), (2, 2, 2), None)
  assert (c.spatial_factor, c.temporal_factor) == (8, 4)
  assert c.factors_as_declared
  assert c.latent_shape((2, 193, 480, 848, 3)) == (2, 49, 60, 106, 16)
  assert c.video_shape((2, 49, 60, 106, 16)) == (2, 193, 480, 848, 3)
  # Two blocks: diffusers applies two spatial steps and one temporal step.
  tiny = V.VAEConfig.from_diffusers(dconf(spatial_compression_ratio=8))
  assert tiny.down_strides == ((2, 2, 2), (1, 2, 2))
  assert (tiny.spatial_factor, tiny.temporal_factor) == (4, 2)
  assert not tiny.factors_as_declared


@pytest.mark.parametrize("over, match", [
    (dict(act_fn="gelu"), r"act_fn='gelu' is not supported"),
    (dict(down_block_types=["HunyuanVideoDownBlock3D", "DownBlock3D"]),
     r"down_block_types has 'DownBlock3D'"),
    (dict(up_block_types=["HunyuanVideoUpBlock3D"] * 3),
     r"up_block_types has 3 entries"),
    (dict(temporal_compression_ratio=8),
     r"temporal_compression_ratio=8 is not supported"),
    (dict(spatial_compression_ratio=6), r"spatial_compression_ratio=6"),
    (dict(norm_num_groups=3), r"not a positive multiple of norm_num_groups=3"),
    (dict(new_option=1), r"does not know: \['new_option'\]"),
    (dict(_class_name="AutoencoderKLWan"), r"AutoencoderKLWan"),
])
def test_unsupported_config_is_named(over, match):
  with pytest.raises(ValueError, match=match):
    V.VAEConfig.from_diffusers(dconf(**over))


@pytest.mark.parametrize("shape, match", [
    ((1, 8, 16, 16, 3), r"8 frames is not 1 \+ 2 k"),
    ((1, 9, 15, 16, 3), r"height 15 and width 16 must be positive multiples "
                        "of 2"),
    ((1, 9, 16, 16, 4), r"4 channels, the VAE takes 3"),
    ((9, 16, 16, 3), r"expected \[B, F, H, W, C\]"),
])
def test_bad_video_is_named(tiny, shape, match):
  config, _ = tiny
  with pytest.raises(ValueError, match=match):
    config.check_video(shape)
  with pytest.raises(ValueError, match=match):    # checked before any work
    V.encode(V.abstract(config), np.zeros(shape, np.float32))
  real = V.VAEConfig()
  with pytest.raises(ValueError, match=r"16 frames is not 1 \+ 4 k .*e.g. 13"):
    real.check_video((1, 16, 64, 64, 3))
  with pytest.raises(ValueError, match="multiples of 8"):
    real.check_video((1, 17, 60, 64, 3))
  with pytest.raises(ValueError, match="8 channels, the VAE has 16"):
    real.check_latents((1, 5, 8, 8, 8))


# --- weights -----------------------------------------------------------------
def test_export_import_is_the_identity(tiny):
  config, sd = tiny
  params = V.import_state_dict(sd, config)
  back = V.export_state_dict(params, config)
  assert set(back) == set(sd)
  for k in sd:
    assert back[k].dtype == sd[k].dtype and back[k].tobytes() == sd[k].tobytes()
  # The layout: torch [out, in, kt, kh, kw] -> [kt, kh, kw, in, out].
  w = sd["encoder.down_blocks.0.resnets.0.conv1.conv.weight"]
  k = params["encoder"]["down_blocks"][0]["resnets"][0]["conv1"]["conv"][
      "kernel"]
  assert k.shape == (3, 3, 3, 8, 8)
  np.testing.assert_array_equal(k[2, 0, 1, 5, 3], w[3, 5, 2, 0, 1])
  np.testing.assert_array_equal(
      params["decoder"]["mid_block"]["attentions"][0]["to_out"][0]["kernel"],
      sd["decoder.mid_block.attentions.0.to_out.0.weight"].T)


def test_missing_unexpected_and_misshapen_keys_are_named(tiny):
  config, sd = tiny
  bad = dict(sd)
  del bad["decoder.up_blocks.1.resnets.0.norm2.bias"]
  bad["encoder.lora.weight"] = np.zeros(3, np.float32)
  bad["quant_conv.weight"] = np.zeros((8, 8, 1, 1, 2), np.float32)
  with pytest.raises(ValueError) as e:
    V.import_state_dict(bad, config)
  msg = str(e.value)
  assert "missing keys (1): decoder.up_blocks.1.resnets.0.norm2.bias" in msg
  assert "unexpected keys (1): encoder.lora.weight" in msg
  assert ("shape mismatches (1): quant_conv.weight: state dict "
          "(8, 8, 1, 1, 2) vs config (8, 8, 1, 1, 1)") in msg
  assert "block_out_channels=[8, 16]" in msg
  # Without mid-block attention its weights are unexpected.
  plain = V.VAEConfig.from_diffusers(dconf(mid_block_add_attention=False))
  with pytest.raises(ValueError, match=r"unexpected keys \(20\): decoder."
                     "mid_block.attentions.0.group_norm.bias"):
    V.import_state_dict(sd, plain)


def test_checkpoint_cli_and_load_vae(tiny, tmp_path):
  config, sd = tiny
  src, ckpt, out = (str(tmp_path / n) for n in ("pipe", "ckpt", "out"))
  folder.save_folder(os.path.join(src, "vae"), config.to_diffusers(), sd)
  assert cli.main(["vae", "import", "--src", src, "--dst", ckpt]) == 0
  assert sorted(os.listdir(ckpt)) == ["params", "vae_config.json"]
  assert cli.main(["vae", "import", "--src", src, "--dst", ckpt]) == 1
  assert cli.main(["vae", "export", "--src", ckpt, "--dst", out]) == 0
  dconf_out, back = folder.load_folder(out)
  assert V.VAEConfig.from_diffusers(dconf_out) == config
  assert set(back) == set(sd)
  for k in sd:
    assert back[k].tobytes() == sd[k].tobytes(), k
  # Either kind of directory loads to the same model.
  want = V.import_state_dict(sd, config)
  for path in (src, os.path.join(src, "vae"), ckpt, out):
    got = V.params_of(vae_io.load_vae(path))
    assert jax.tree.all(jax.tree.map(np.array_equal, got, want)), path
  # A checkpoint whose params disagree with its config: named.
  other = V.VAEConfig.from_diffusers(dconf(layers_per_block=2))
  with pytest.raises(ValueError, match=r"missing \(32\): decoder.up_blocks"
                     r".0.resnets.2.conv1.conv.bias, "):
    checkpoint.load_params(ckpt, other)
  with pytest.raises(FileNotFoundError, match="no config.json"):
    vae_io.load_vae(str(tmp_path))


def test_bfloat16_import(tiny, tmp_path):
  config, sd = tiny
  folder.save_folder(str(tmp_path / "src"), config.to_diffusers(), sd)
  assert cli.main(["vae", "import", "--src", str(tmp_path / "src"), "--dst",
                   str(tmp_path / "ckpt"), "--dtype", "bfloat16"]) == 0
  vae = vae_io.load_vae(str(tmp_path / "ckpt"))
  assert vae.quant_conv.kernel[...].dtype == jax.numpy.bfloat16


# --- sharding and latents ----------------------------------------------------
def test_sharded_equals_unsharded(tiny):
  """8 fake devices, the batch split over ('fsdp', 'data') (the project's
  batch rule): each device's result is bit-for-bit the one-video result."""
  config, _ = tiny
  vae = V.init(config, seed=0)          # torch's init: activations O(1)
  mesh = make_mesh({"data": 4, "fsdp": 2, "context": 1, "tensor": 1})
  video = np.random.default_rng(1).uniform(-1, 1, (8, 5, 8, 8, 3)).astype(
      np.float32)
  latents = V.to_latents(vae, video, mesh=mesh, compiler_options=O0)
  assert latents.sharding.spec[0] == ("fsdp", "data")
  assert len(latents.sharding.device_set) == 8
  one_enc = V.jit_vae(V.encode, compiler_options=O0)
  want = np.concatenate([np.asarray(one_enc(vae, video[i:i + 1])[0])
                         for i in range(8)]) * config.scaling_factor
  np.testing.assert_array_equal(np.asarray(latents), want)
  decoded = V.from_latents(vae, latents, mesh=mesh, compiler_options=O0)
  assert decoded.shape == video.shape
  one_dec = V.jit_vae(V.from_latents, compiler_options=O0)
  want = np.concatenate([np.asarray(one_dec(vae, latents[i:i + 1]))
                         for i in range(8)])
  np.testing.assert_array_equal(np.asarray(decoded), want)
  with pytest.raises(ValueError, match="batch 3 does not split"):
    V.to_latents(vae, video[:3], mesh=mesh)


def test_sharded_tiles_equal_unsharded():
  """Tiled encoding on the mesh: each tile's batch split over the devices."""
  config = V.VAEConfig.from_diffusers(dconf(
      block_out_channels=[8, 8, 8], spatial_compression_ratio=4))
  vae = V.init(config, seed=0)
  mesh = make_mesh({"data": 8, "fsdp": 1, "context": 1, "tensor": 1})
  tiles = V.Tiling(tile_sample_min_height=8, tile_sample_stride_height=8,
                   tile_sample_min_width=8, tile_sample_stride_width=4)
  video = np.random.default_rng(2).uniform(-1, 1, (8, 5, 8, 12, 3)).astype(
      np.float32)               # 3 tiles across: 8, 8 and 4 pixels wide
  assert len(V.tile_shapes(config, video.shape, tiles)["encode"]) == 2
  mean, logvar = V.tiled_encode(vae, video, tiles, mesh=mesh,
                                compiler_options=O0)
  for i in (0, 5):
    one = V.tiled_encode(vae, video[i:i + 1], tiles, compiler_options=O0)
    np.testing.assert_array_equal(mean[i:i + 1], one[0])
    np.testing.assert_array_equal(logvar[i:i + 1], one[1])


# --- tiling ------------------------------------------------------------------
def test_tiling_plan_at_480p():
  """A 480 x 848 x 193-frame clip at diffusers' default tiles: 16 chunks of
  3 x 5 tiles each way, 8 distinct tile shapes (8 compilations)."""
  plan = V.tile_shapes(V.VAEConfig(), (1, 193, 480, 848, 3))
  assert [len(plan[k]) for k in ("encode", "decode")] == [8, 8]
  assert sum(n for _, n in plan["encode"]) == 240
  assert plan["encode"][0] == ((1, 17, 256, 256, 3), 120)
  assert plan["decode"][0] == ((1, 5, 32, 32, 16), 120)


def test_bad_tiling_is_named(tiny):
  config, _ = tiny
  with pytest.raises(ValueError, match="diffusers' tiling uses the declared"):
    V.Tiling().check(config)
  real = V.VAEConfig()
  with pytest.raises(ValueError, match="tile_sample_min_height=256, "
                     "tile_sample_stride_height=100: .*multiples of 8"):
    V.Tiling(tile_sample_stride_height=100).check(real)
  with pytest.raises(ValueError, match="tile_sample_min_num_frames=8, "
                     "tile_sample_stride_num_frames=12"):
    V.Tiling(tile_sample_min_num_frames=8).check(real)


def test_blend_is_diffusers_cross_fade():
  a = np.arange(2 * 5, dtype=np.float32).reshape(1, 1, 1, 2, 5) + 100
  b = np.zeros((1, 1, 1, 4, 5), np.float32)
  blend = tiling._blend  # pylint: disable=protected-access
  got = blend(a, b, 3, axis=3)
  # extent min(2, 4, 3) = 2: b[y] = a[-2 + y] (1 - y / 2) + b[y] y / 2.
  np.testing.assert_array_equal(got[0, 0, 0, 0], a[0, 0, 0, 0])
  np.testing.assert_array_equal(got[0, 0, 0, 1], a[0, 0, 0, 1] * 0.5)
  np.testing.assert_array_equal(got[0, 0, 0, 2:], 0)
