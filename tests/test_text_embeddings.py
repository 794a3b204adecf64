"""Precomputed prompt embeddings: schema, folder, TFDS, pipeline."""
import json
import os
import pathlib

import numpy as np
import pytest

from lct_jax import batch as batch_lib
from lct_jax import configlib
from lct_jax.data import builders, folder, pipeline, records, sources
from lct_jax.data.text_encoder import HashedTextEncoder

ROOT = pathlib.Path(__file__).resolve().parents[1]
D, P = 24, 8


def embeddings_config(**data):
  c = configlib.load(str(ROOT / "configs" / "demo.py"))
  c.model.text_mode = "embeddings"
  c.model.text_embed_dim, c.model.pooled_dim = D, P
  c.data.num_scenes, c.data.read_threads = 16, 1
  for k, v in data.items():
    c.data[k] = v
  configlib.validate(c)
  return c


def test_records_carry_embeddings_that_validate():
  rec = sources.SyntheticSource(4, text_embed_dim=D, pooled_dim=P)[2]
  rec = records.validate_record(rec)
  groups = records.split_embeddings(rec)
  prompts = [rec["global_prompt"], *rec["shot_prompts"]]
  assert len(groups) == len(prompts)
  enc = HashedTextEncoder(D, P)
  for emb, prompt in zip(groups, prompts):
    np.testing.assert_array_equal(emb, enc(prompt)[0])
  assert rec[records.POOLED].shape == (len(prompts), P)


@pytest.mark.parametrize("edit, match", [
    (lambda r: r.update(prompt_embeddings=r["prompt_embeddings"][:-1]),
     "prompt_embeddings must be"),
    (lambda r: r.update(prompt_embedding_len=r["prompt_embedding_len"][:-1]),
     "prompt_embedding_len must hold"),
    (lambda r: r.update(prompt_pooled=r["prompt_pooled"][:1]),
     "prompt_pooled must be"),
])
def test_bad_embeddings_are_named(edit, match):
  rec = sources.SyntheticSource(1, text_embed_dim=D, pooled_dim=P)[0]
  edit(rec)
  with pytest.raises(records.BadRecordError,
                     match=f"synthetic-00000000.*{match}"):
    records.validate_record(rec)


def test_a_record_without_embeddings_stores_empty_fields():
  rec = builders.to_features(sources.SyntheticSource(1)[0])
  assert rec[records.EMBEDDING_LEN].shape == (0,)
  assert records.EMBEDDINGS not in records.validate_record(rec)


def test_embeddings_survive_folder_and_tfds(tmp_path):
  src = sources.SyntheticSource(3, text_embed_dim=D, pooled_dim=P)
  for i in range(3):
    folder.write_scene(str(tmp_path / "scenes"), records.validate_record(
        src[i]))
  built = builders.build_folder(str(tmp_path / "scenes"),
                                str(tmp_path / "tfds"))
  split = builders.open_split(built, "train")
  for i in range(3):
    want, got = records.validate_record(src[i]), split[i]
    for key in (records.EMBEDDINGS, records.EMBEDDING_LEN, records.POOLED):
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  assert split.frame_sizes() == [(32, 32)] * 3


def test_a_folder_with_embeddings_for_some_groups_only_is_bad(tmp_path):
  src = sources.SyntheticSource(1, text_embed_dim=D)
  scene_dir = folder.write_scene(str(tmp_path), records.validate_record(
      src[0]))
  os.remove(os.path.join(scene_dir, "shot_01_text.npy"))
  with pytest.raises(records.BadRecordError, match="missing file shot_01"):
    folder.read_scene(str(tmp_path), "synthetic-00000000")
  path = os.path.join(scene_dir, folder.SCENE_JSON)
  with open(path) as f:
    meta = json.load(f)
  del meta["shots"][0]["prompt_embedding"]
  with open(path, "w") as f:
    json.dump(meta, f)
  with pytest.raises(records.BadRecordError, match="every shot, or for none"):
    folder.read_scene(str(tmp_path), "synthetic-00000000")


def test_pipeline_batches_hold_the_kept_groups_embeddings():
  c = embeddings_config()
  N, L = c.scene.max_shots, c.scene.max_text_len
  src = pipeline.source_from_config(c)
  it = pipeline.make_pipeline(c, src)
  batch = next(it)
  batch_lib.validate_batch(batch, c)
  B = c.train.batch_size
  assert batch["text"].shape == (B, N + 1, L, D)
  assert batch["pooled"].shape == (B, N + 1, P)
  enc = HashedTextEncoder(D, P)
  for b, sid in enumerate(it.last_info["scene_id"]):
    rec = records.validate_record(src[int(sid.split("-")[-1])])
    s0 = int(it.last_info["first_shot"][b])
    n = int((batch["num_frames"][b] > 0).sum())
    prompts = [rec["global_prompt"]] + rec["shot_prompts"][s0:s0 + n]
    for g, prompt in enumerate(prompts):
      emb, pooled = enc(prompt)
      length = min(len(emb), L)
      assert batch["text_len"][b, g] == length
      np.testing.assert_array_equal(batch["text"][b, g, :length],
                                    emb[:length].astype(np.float32))
      assert not batch["text"][b, g, length:].any()
      np.testing.assert_array_equal(batch["pooled"][b, g], pooled)
    assert not batch["text"][b, n + 1:].any()
    assert not batch["pooled"][b, n + 1:].any()


def test_embeddings_mode_needs_records_with_embeddings():
  c = embeddings_config()
  with pytest.raises(records.BadRecordError, match="no prompt embeddings"):
    next(pipeline.make_pipeline(c, sources.SyntheticSource(4)))
  c.model.text_embed_dim = D + 1
  with pytest.raises(records.BadRecordError, match="width 24 but model.text"):
    next(pipeline.make_pipeline(
        c, sources.SyntheticSource(4, text_embed_dim=D, pooled_dim=P)))
