"""HunyuanTextEncoder (lct_jax/data/hunyuan_text.py) against diffusers'
HunyuanVideoPipeline.encode_prompt, on tiny random text encoders and
tokenizers built here and saved as a pipeline folder (nothing downloaded).
Needs the `parity` extra (torch, diffusers, transformers); skipped without
it, except in CI (LCT_REQUIRE_PARITY), where that is a failure."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import _util

torch, transformers, diffusers = _util.parity_modules(
    "torch", "transformers", "diffusers")

from lct_jax.data import builders  # noqa: E402
from lct_jax.data import folder as folder_io  # noqa: E402
from lct_jax.data import hunyuan_text, records, sources  # noqa: E402
from lct_jax.data.hunyuan_text import HunyuanTextEncoder  # noqa: E402

LLM_SPECIAL = ["<pad>", "<unk>", "<|begin_of_text|>", "<|start_header_id|>",
               "<|end_header_id|>", "<|eot_id|>"]
CLIP_SPECIAL = ["<unk>", "<|startoftext|>", "<|endoftext|>"]
PROMPT_WORDS = ("a red cat walks on the grass slowly under blue sky camera "
                "pans left then right close up wide shot").split()
MAX_SEQ = 12        # small, so that the long prompt is truncated cheaply
PROMPTS = [
    "a red cat",
    "",
    "the camera pans left, close up",
    " ".join(PROMPT_WORDS * 6),   # 120 words: past MAX_SEQ and CLIP's 77
]


def _words(text):
  return re.findall(r"\w+|[^\w\s]+", text.lower())


def _tokenizer(special, words, *, bos, eos, pad, template,
               special_last=False):
  """A WordLevel tokenizer (lower-cased words and punctuation, unknown words
  -> <unk>) wrapped as a transformers fast tokenizer; the special tokens take
  the first ids, or the last ones (`special_last`, as in CLIP's vocabulary)."""
  from tokenizers import (Tokenizer, models, normalizers, pre_tokenizers,
                          processors)
  vocab = {}
  for w in (words + special if special_last else special + words):
    vocab.setdefault(w, len(vocab))
  tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tok.normalizer = normalizers.Lowercase()
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.add_special_tokens(special)
  tok.post_processor = processors.TemplateProcessing(
      single=template, special_tokens=[(t, vocab[t]) for t in special
                                       if t in template])
  return transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad,
      unk_token="<unk>", padding_side="right", model_max_length=512)


def _parts(llava=False):
  torch.manual_seed(0)
  template = hunyuan_text.DEFAULT_TEMPLATE
  words = _words(template.replace("{}", " ")) + PROMPT_WORDS + [","]
  tok = _tokenizer(LLM_SPECIAL, words, bos="<|begin_of_text|>",
                   eos="<|eot_id|>", pad="<pad>",
                   template="<|begin_of_text|> $A")
  tok_2 = _tokenizer(CLIP_SPECIAL, PROMPT_WORDS + [","], bos="<|startoftext|>",
                     eos="<|endoftext|>", pad="<|endoftext|>",
                     template="<|startoftext|> $A <|endoftext|>",
                     special_last=True)
  llama_cfg = transformers.LlamaConfig(
      vocab_size=len(tok), hidden_size=32, intermediate_size=48,
      num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
      max_position_embeddings=256, pad_token_id=tok.pad_token_id)
  if llava:
    vision = transformers.CLIPVisionConfig(
        hidden_size=16, intermediate_size=24, num_hidden_layers=1,
        num_attention_heads=2, image_size=8, patch_size=4)
    llm = transformers.LlavaForConditionalGeneration(transformers.LlavaConfig(
        vision_config=vision, text_config=llama_cfg,
        image_token_index=len(tok) - 1)).eval()
  else:
    llm = transformers.LlamaModel(llama_cfg).eval()
  clip = transformers.CLIPTextModel(transformers.CLIPTextConfig(
      vocab_size=len(tok_2), hidden_size=24, intermediate_size=40,
      num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
      # eos_token_id=2, as in openai/clip-vit-large-patch14's config: CLIP
      # then pools at the highest token id, which is <|endoftext|>'s.
      eos_token_id=2, bos_token_id=tok_2.bos_token_id,
      pad_token_id=tok_2.pad_token_id)).eval()
  assert tok_2.eos_token_id == len(tok_2) - 1
  return llm, tok, clip, tok_2


def _save(root, llm, tok, clip, tok_2):
  for sub, obj in [("text_encoder", llm), ("tokenizer", tok),
                   ("text_encoder_2", clip), ("tokenizer_2", tok_2)]:
    obj.save_pretrained(str(root / sub))
  return str(root)


def _crop_start(tok):
  """The template's tokens before the prompt, BOS included (95 for
  HunyuanVideo's Llama-3 tokenizer)."""
  prefix = hunyuan_text.DEFAULT_TEMPLATE.split("{}")[0]
  return len(tok(prefix).input_ids)


def _pipeline(llm, tok, clip, tok_2):
  return diffusers.HunyuanVideoPipeline(
      text_encoder=llm, tokenizer=tok, transformer=None, vae=None,
      scheduler=None, text_encoder_2=clip, tokenizer_2=tok_2)


def _reference(pipe, prompts, crop_start):
  """diffusers' encode_prompt: the rows its mask keeps, and pooled."""
  template = dict(template=hunyuan_text.DEFAULT_TEMPLATE,
                  crop_start=crop_start)
  with torch.no_grad():
    emb, pooled, mask = pipe.encode_prompt(
        prompts, prompt_template=template, device=torch.device("cpu"),
        max_sequence_length=MAX_SEQ)
  assert emb.dtype == pooled.dtype == torch.float32
  return [(e[m.bool()].numpy(), p.numpy())
          for e, m, p in zip(emb, mask, pooled)]


@pytest.fixture(scope="module")
def parts():
  return _parts()


@pytest.fixture(scope="module")
def folder(parts, tmp_path_factory):
  return _save(tmp_path_factory.mktemp("hunyuan"), *parts)


def test_template_and_defaults_are_the_pipelines():
  from diffusers.pipelines.hunyuan_video import pipeline_hunyuan_video as hv
  assert hunyuan_text.DEFAULT_TEMPLATE == hv.DEFAULT_PROMPT_TEMPLATE["template"]
  assert (hunyuan_text.DEFAULT_CROP_START
          == hv.DEFAULT_PROMPT_TEMPLATE["crop_start"])


def test_matches_diffusers_encode_prompt(parts, folder):
  crop = _crop_start(parts[1])
  enc = HunyuanTextEncoder.from_folder(folder, crop_start=crop,
                                       max_sequence_length=MAX_SEQ)
  assert (enc.dim, enc.pooled_dim) == (32, 24)
  want = _reference(_pipeline(*parts), PROMPTS, crop)
  got = enc.encode(PROMPTS)
  lens = [len(e) for e, _ in got]
  # The prompt's tokens + <|eot_id|>, the long one truncated to MAX_SEQ.
  assert lens == [4, 1, 8, MAX_SEQ], lens
  for (e, p), (we, wp) in zip(got, want):
    assert e.dtype == p.dtype == np.float32
    # Same weights (a float32 safetensors round trip), same token ids, same
    # batch, same ops in the same order: identical bits.
    np.testing.assert_array_equal(e, we)
    np.testing.assert_array_equal(p, wp)
  # One prompt at a time, in float16 (the record's dtype): the float32
  # reference rounded to float16 (relative error <= 2**-11; the margin admits
  # a float32 difference from the batch size flipping a rounding).
  for prompt, (we, wp) in zip(PROMPTS, want):
    e16, p16 = enc(prompt)
    assert e16.dtype == p16.dtype == np.float16
    np.testing.assert_allclose(e16, we, rtol=2**-10, atol=1e-7)
    np.testing.assert_allclose(p16, wp, rtol=2**-10, atol=1e-7)


def test_bfloat16(parts, folder):
  """dtype='bfloat16' computes in bfloat16, as the pipeline does when loaded
  with torch_dtype=bfloat16: diffusers then loads each text model with
  transformers' from_pretrained(dtype=...), which keeps Llama's RoPE inverse
  frequencies in float32 (a model.to(bfloat16) would round them, and the
  results would differ by a bfloat16 ulp)."""
  crop = _crop_start(parts[1])
  enc = HunyuanTextEncoder.from_folder(folder, dtype="bfloat16",
                                       crop_start=crop,
                                       max_sequence_length=MAX_SEQ)
  _, tok, _, tok_2 = parts
  load = lambda cls, sub: cls.from_pretrained(f"{folder}/{sub}",
                                              dtype=torch.bfloat16)
  pipe = _pipeline(load(transformers.LlamaModel, "text_encoder"), tok,
                   load(transformers.CLIPTextModel, "text_encoder_2"), tok_2)
  template = dict(template=hunyuan_text.DEFAULT_TEMPLATE, crop_start=crop)
  with torch.no_grad():
    emb, pooled, mask = pipe.encode_prompt(
        PROMPTS[:3], prompt_template=template, device=torch.device("cpu"),
        max_sequence_length=MAX_SEQ)
  assert emb.dtype == torch.bfloat16
  for (e, p), we, m, wp in zip(enc.encode(PROMPTS[:3]), emb, mask, pooled):
    np.testing.assert_array_equal(e, we[m.bool()].float().numpy())
    np.testing.assert_array_equal(p, wp.float().numpy())


def test_other_hidden_layer(parts, folder):
  """num_hidden_layers_to_skip=0 (the last layer, after the final norm), vs
  the pipeline's _get_llama_prompt_embeds (encode_prompt keeps the default)."""
  crop = _crop_start(parts[1])
  enc = HunyuanTextEncoder.from_folder(folder, crop_start=crop,
                                       max_sequence_length=MAX_SEQ,
                                       num_hidden_layers_to_skip=0)
  with torch.no_grad():
    emb, mask = _pipeline(*parts)._get_llama_prompt_embeds(
        PROMPTS, dict(template=hunyuan_text.DEFAULT_TEMPLATE,
                      crop_start=crop),
        device=torch.device("cpu"), max_sequence_length=MAX_SEQ,
        num_hidden_layers_to_skip=0)
  for (e, _), we, m in zip(enc.encode(PROMPTS), emb, mask):
    np.testing.assert_array_equal(e, we[m.bool()].numpy())


def test_llava_folder_uses_its_language_model(tmp_path):
  llava, tok, clip, tok_2 = _parts(llava=True)
  folder = _save(tmp_path, llava, tok, clip, tok_2)
  crop = _crop_start(tok)
  enc = HunyuanTextEncoder.from_folder(folder, crop_start=crop,
                                       max_sequence_length=MAX_SEQ)
  assert isinstance(enc.text_encoder, transformers.LlamaModel)
  want = _reference(_pipeline(llava.model.language_model, tok, clip, tok_2),
                    PROMPTS[:2], crop)
  for (e, p), (we, wp) in zip(enc.encode(PROMPTS[:2]), want):
    np.testing.assert_array_equal(e, we)
    np.testing.assert_array_equal(p, wp)


def test_embed_record_validates(parts, folder):
  enc = HunyuanTextEncoder.from_folder(folder, crop_start=_crop_start(parts[1]),
                                       max_sequence_length=MAX_SEQ)
  rec = sources.SyntheticSource(1)[0]
  rec["shot_prompts"] = [PROMPTS[0], PROMPTS[3]] + rec["shot_prompts"][2:]
  out = records.validate_record(hunyuan_text.embed_record(rec, enc))
  texts = hunyuan_text.record_texts(rec)
  want = enc.encode(texts)
  np.testing.assert_array_equal(out[records.EMBEDDING_LEN],
                                [len(e) for e, _ in want])
  assert out[records.EMBEDDING_LEN][1:3].tolist() == [4, MAX_SEQ]
  assert out[records.EMBEDDINGS].dtype == np.float16
  assert out[records.POOLED].dtype == np.float16
  assert out[records.POOLED].shape == (len(texts), 24)
  for got_e, (e, _) in zip(records.split_embeddings(out), want):
    np.testing.assert_array_equal(got_e, e.astype(np.float16))
  np.testing.assert_array_equal(
      out[records.POOLED], np.stack([p for _, p in want]).astype(np.float16))
  np.testing.assert_array_equal(enc.embed_record(rec)[records.EMBEDDINGS],
                                out[records.EMBEDDINGS])


def test_wrong_folders_are_named(folder, tmp_path):
  import shutil
  bad = tmp_path / "no_clip"
  shutil.copytree(folder, bad)
  shutil.rmtree(bad / "text_encoder_2")
  with pytest.raises(hunyuan_text.WrongFolderError, match=re.escape(
      f"{bad} is not a HunyuanVideo text-encoder folder: it lacks "
      "text_encoder_2/ (the CLIP text model")):
    HunyuanTextEncoder.from_folder(str(bad))
  swapped = tmp_path / "swapped"
  shutil.copytree(folder, swapped)
  shutil.rmtree(swapped / "text_encoder")
  shutil.copytree(swapped / "text_encoder_2", swapped / "text_encoder")
  with pytest.raises(hunyuan_text.WrongFolderError, match=re.escape(
      f"{swapped / 'text_encoder'} holds a model of type 'clip_text_model'; "
      "expected the Llama text encoder")):
    HunyuanTextEncoder.from_folder(str(swapped))
  with pytest.raises(hunyuan_text.WrongFolderError, match="is not a folder"):
    HunyuanTextEncoder.from_folder(str(tmp_path / "nowhere"))


def test_a_crop_start_that_misses_the_prompt_warns(parts):
  llm, tok, clip, tok_2 = parts
  with pytest.warns(UserWarning, match="crop_start=95, but the template's "
                    f"part before the prompt is {_crop_start(tok)} tokens"):
    HunyuanTextEncoder(llm, tok, clip, tok_2)


def test_command_line(parts, folder, capsys):
  assert hunyuan_text.main([
      "--text_encoders", folder, "--prompt", "a red cat", "--prompt", "",
      "--crop_start", str(_crop_start(parts[1])),
      "--max_sequence_length", str(MAX_SEQ)]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines == ["embeddings (4, 32) pooled (24,): 'a red cat'",
                   "embeddings (1, 32) pooled (24,): ''"]
  assert hunyuan_text.main(["--text_encoders", "/nonexistent",
                            "--prompt", "x"]) == 2


def test_build_folder_adds_the_encoders_embeddings(parts, folder, tmp_path):
  """data/build.py folder --text_encoders: every group's embeddings and
  pooled vector in the built records, as the encoder gives them."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  src, data_dir = tmp_path / "videos", tmp_path / "data"
  (src / "s0").mkdir(parents=True)
  folder_io.write_video(str(src / "s0" / "a.mp4"),
                        np.zeros((2, 8, 8, 3), np.uint8))
  (src / "s0" / "scene.json").write_text(json.dumps(
      {"global_prompt": "a red cat", "shots": [
          {"prompt": "the cat sits", "video": "a.mp4"}]}))
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=root)
  proc = subprocess.run(
      [sys.executable, os.path.join(root, "data", "build.py"), "folder",
       "--src", str(src), "--data_dir", str(data_dir), "--text_encoders",
       folder], cwd=root, env=env, capture_output=True, text=True,
      timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "1 scenes encoded" in proc.stdout
  builder = builders.build_folder(str(data_dir / "encoded_scenes"),
                                  str(data_dir))
  (record,) = list(builders.open_split(builder, "train"))
  assert record["frames"].shape == (2, 8, 8, 3)        # pixels kept
  enc = HunyuanTextEncoder.from_folder(folder)        # the CLI's defaults
  for got, text in zip(records.split_embeddings(record),
                       ["a red cat", "the cat sits"]):
    np.testing.assert_array_equal(got, enc(text)[0])
  np.testing.assert_array_equal(record[records.POOLED][1],
                                enc("the cat sits")[1])
