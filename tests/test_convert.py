"""The converter without torch: bad input, safetensors files, the CLI and the
orbax checkpoint. Weights are random numpy arrays under diffusers' names
(the expected names are checked against diffusers itself in
test_parity.py)."""
import json
import os

import ml_dtypes
import numpy as np
import pytest

from lct_jax.convert import (__main__ as cli, checkpoint, folder, hunyuan,
                             parity, safetensors_io)

DCONF = parity.tiny_diffusers_config(num_layers=2, num_single_layers=1,
                                     num_refiner_layers=1,
                                     guidance_embeds=True)


def random_state_dict(config, seed=0):
  """Random tensors for every key (and shape) the config expects."""
  rng = np.random.default_rng(seed)
  return {k: rng.standard_normal(shape).astype(np.float32)
          for k, (_, _, shape) in hunyuan.expected_keys(config).items()}


@pytest.fixture(scope="module")
def setup():
  config = hunyuan.config_from_diffusers(DCONF)
  return config, random_state_dict(config)


# --- bad input ---------------------------------------------------------------
@pytest.mark.parametrize("kind", ["token_replace", "latent_concat", "other"])
def test_unsupported_image_condition_type(kind):
  with pytest.raises(ValueError, match=r"image_condition_type=.*supported: "
                     r"\[None\]"):
    hunyuan.config_from_diffusers({**DCONF, "image_condition_type": kind})


def test_unknown_config_fields_and_class():
  with pytest.raises(ValueError, match="does not know: \\['new_field'\\]"):
    hunyuan.config_from_diffusers({**DCONF, "new_field": 1})
  with pytest.raises(ValueError, match="FluxTransformer2DModel"):
    hunyuan.config_from_diffusers({**DCONF,
                                   "_class_name": "FluxTransformer2DModel"})
  with pytest.raises(ValueError, match="qk_norm='layer_norm'"):
    hunyuan.config_from_diffusers({**DCONF, "qk_norm": "layer_norm"})


def test_missing_and_unexpected_keys_are_listed(setup):
  config, sd = setup
  bad = dict(sd)
  del bad["transformer_blocks.1.attn.to_q.weight"]
  del bad["single_transformer_blocks.0.proj_mlp.bias"]
  bad["transformer_blocks.2.attn.to_q.weight"] = sd[
      "transformer_blocks.1.attn.to_q.weight"]
  bad["lora.down"] = np.zeros(3, np.float32)
  with pytest.raises(ValueError) as e:
    hunyuan.import_state_dict(bad, config)
  msg = str(e.value)
  assert ("missing keys (2): single_transformer_blocks.0.proj_mlp.bias, "
          "transformer_blocks.1.attn.to_q.weight") in msg
  assert ("unexpected keys (2): lora.down, "
          "transformer_blocks.2.attn.to_q.weight") in msg
  assert "num_layers=2" in msg


def test_shape_mismatch_is_listed(setup):
  config, sd = setup
  bad = dict(sd, **{"x_embedder.proj.weight": np.zeros((32, 4, 2, 2, 2),
                                                        np.float32)})
  with pytest.raises(ValueError, match=r"shape mismatches \(1\): "
                     r"x_embedder.proj.weight: state dict \(32, 4, 2, 2, 2\) "
                     r"vs config \(32, 4, 1, 2, 2\)"):
    hunyuan.import_state_dict(bad, config)


def test_export_needs_a_diffusers_shaped_model(setup):
  config, sd = setup
  params = hunyuan.import_state_dict(sd, config)
  tokens = config.copy_and_resolve_references()
  tokens.model.text_mode = "tokens"
  with pytest.raises(ValueError, match="text_mode='tokens'"):
    hunyuan.export_state_dict(params, tokens)
  del params["proj_out"]
  with pytest.raises(ValueError, match=r"missing \(2\): proj_out.bias, "
                     "proj_out.kernel"):
    hunyuan.export_state_dict(params, config)


def test_unused_refiner_embedder_is_dropped_and_refilled():
  """Without refiner blocks diffusers still has the refiner's embedder:
  import ignores it, export writes zeros so strict loading works."""
  config = hunyuan.config_from_diffusers({**DCONF, "num_refiner_layers": 0})
  sd = random_state_dict(config)
  assert not any(k.startswith("context_embedder.time_text_embed") for k in sd)
  params = hunyuan.import_state_dict(
      {**sd, "context_embedder.time_text_embed.text_embedder.linear_1.weight":
       np.ones((32, 24), np.float32)}, config)
  exported = hunyuan.export_state_dict(params, config)
  extra = sorted(set(exported) - set(sd))
  assert len(extra) == 8 and all(
      k.startswith("context_embedder.time_text_embed.") for k in extra)
  assert all(not exported[k].any() for k in extra)


def test_base_config_keeps_its_non_architecture_fields():
  from lct_jax import configlib, stages  # pylint: disable=g-import-not-at-top
  base = stages.apply_stage(configlib.base_config(), "text_rope",
                            max_shots=1)
  base.scene.height = 16
  c = hunyuan.config_from_diffusers(DCONF, base)
  assert c.model.text_rope and c.scene.height == 16
  assert c.model.depth == 2 and c.model.num_refiner_layers == 1
  assert not hunyuan.config_from_diffusers(DCONF).model.text_rope
  assert base.model.num_refiner_layers == 0          # base is not modified
  assert base.model.text_mode == "tokens"


# --- names and layout --------------------------------------------------------
def test_names_and_layout(setup):
  config, sd = setup
  params = hunyuan.import_state_dict(sd, config)
  blocks = params["transformer_blocks"]
  np.testing.assert_array_equal(
      blocks["attn"]["to_out_0"]["kernel"][1],
      sd["transformer_blocks.1.attn.to_out.0.weight"].T)
  np.testing.assert_array_equal(
      params["context_embedder"]["token_refiner"]["refiner_blocks"]["ff"][
          "net_0_proj"]["bias"][0],
      sd["context_embedder.token_refiner.refiner_blocks.0.ff.net.0.proj.bias"])
  # Conv3d [D, C, pt, p, p] -> linear over (c, pt, p, p) features.
  w = sd["x_embedder.proj.weight"]
  k = params["x_embedder"]["proj"]["kernel"]
  assert k.shape == (4 * 1 * 2 * 2, 32)
  c, t, y, x = 2, 0, 1, 1          # feature ((c * pt + t) * p + y) * p + x
  np.testing.assert_array_equal(k[((c * 1 + t) * 2 + y) * 2 + x],
                                w[:, c, t, y, x])


# --- files -------------------------------------------------------------------
def test_safetensors_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  tensors = {
      "a.weight": rng.standard_normal((3, 5)).astype(np.float32),
      "b": rng.standard_normal((7,)).astype(ml_dtypes.bfloat16),
      "c": rng.standard_normal((2, 2, 2)).astype(np.float16),
      "d": np.arange(5, dtype=np.int64),
      "e": np.zeros((0, 4), np.float32),
  }
  path = str(tmp_path / "x.safetensors")
  safetensors_io.write_safetensors(path, tensors, {"format": "pt"})
  back = safetensors_io.read_safetensors(path)
  assert set(back) == set(tensors)
  for k, v in tensors.items():
    assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
    np.testing.assert_array_equal(back[k], v)
  index = safetensors_io.write_sharded(str(tmp_path), tensors,
                                       max_shard_bytes=40)
  assert len(set(json.load(open(index))["weight_map"].values())) > 1
  back = safetensors_io.read_state_dict(index)
  for k, v in tensors.items():
    np.testing.assert_array_equal(back[k], v)
  with pytest.raises(ValueError, match="torch .bin"):
    safetensors_io.read_state_dict(str(tmp_path / "model.bin"))


def test_folder_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="no config.json"):
    folder.load_folder(str(tmp_path))
  (tmp_path / "transformer").mkdir()
  (tmp_path / "transformer" / "config.json").write_text("{}")
  with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model"):
    folder.load_folder(str(tmp_path))


def test_cli_import_export_and_load_params(setup, tmp_path):
  config, sd = setup
  src, ckpt, out = (str(tmp_path / n) for n in ("src", "ckpt", "out"))
  folder.save_folder(os.path.join(src, "transformer"), DCONF, sd,
                     max_shard_bytes=50_000)
  assert cli.main(["import", "--src", src, "--dst", ckpt]) == 0
  assert sorted(os.listdir(ckpt)) == ["config.json", "diffusers_config.json",
                                      "params"]
  assert cli.main(["import", "--src", src, "--dst", ckpt]) == 1  # exists
  want = hunyuan.import_state_dict(sd, config)
  loaded_config = checkpoint.load_config(ckpt)
  assert loaded_config.model.to_dict() == config.model.to_dict()
  got = checkpoint.load_params(ckpt, loaded_config)
  flat_w, flat_g = hunyuan.flatten(want), hunyuan.flatten(got)
  assert set(flat_w) == set(flat_g)
  for k in flat_w:
    assert flat_g[k].dtype == np.float32
    np.testing.assert_array_equal(np.asarray(flat_g[k]), flat_w[k])
  # A config with another depth: a clear error, before any restore.
  deeper = config.copy_and_resolve_references()
  deeper.model.depth = 3
  with pytest.raises(ValueError, match="shape mismatches.*transformer_blocks"):
    checkpoint.load_params(ckpt, deeper)
  # And back to a diffusers folder.
  assert cli.main(["export", "--src", ckpt, "--dst", out]) == 0
  dconf, back = folder.load_folder(out)
  assert {k: v for k, v in dconf.items() if not k.startswith("_")} == {
      k: (list(v) if isinstance(v, tuple) else v) for k, v in DCONF.items()}
  assert set(back) == set(sd)
  for k in sd:
    np.testing.assert_array_equal(back[k], sd[k])


def test_a_failed_overwrite_keeps_the_last_good_checkpoint(setup, tmp_path,
                                                           monkeypatch):
  config, sd = setup
  ckpt = str(tmp_path / "ckpt")
  good = hunyuan.import_state_dict(sd, config)
  checkpoint.save_params(ckpt, good, config)
  other = hunyuan.import_state_dict(random_state_dict(config, seed=1), config)

  def disk_full(self, path, *args, **kwargs):
    os.makedirs(path)                 # a partial write, then the failure
    raise OSError("No space left on device")

  monkeypatch.setattr(checkpoint.ocp.StandardCheckpointer, "save", disk_full)
  with pytest.raises(OSError, match="No space"):
    checkpoint.save_params(ckpt, other, config, overwrite=True)
  monkeypatch.undo()
  got = hunyuan.flatten(checkpoint.load_params(ckpt, config))
  for k, v in hunyuan.flatten(good).items():
    np.testing.assert_array_equal(np.asarray(got[k]), v)
  # The next save cleans the leftover and replaces the checkpoint whole.
  checkpoint.save_params(ckpt, other, config, overwrite=True)
  got = hunyuan.flatten(checkpoint.load_params(ckpt, config))
  for k, v in hunyuan.flatten(other).items():
    np.testing.assert_array_equal(np.asarray(got[k]), v)
  assert sorted(os.listdir(ckpt)) == ["config.json", "params"]
