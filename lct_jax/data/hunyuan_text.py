"""HunyuanVideo's prompt encoding (LLM hidden states + CLIP pooled), as records.

HunyuanVideo conditions on two text encodings, both computed here exactly as
diffusers' `HunyuanVideoPipeline.encode_prompt` computes them:

  * embeddings [L, D]: the prompt, put into a system/user chat template
    (`DEFAULT_TEMPLATE`), tokenized by the Llama tokenizer (which adds BOS),
    padded and truncated to `crop_start + max_sequence_length` tokens, run
    through the decoder LLM (`text_encoder/`, a LlamaModel); the hidden state
    `num_hidden_layers_to_skip` layers from the end (`hidden_states[-(k+1)]`,
    k = 2 by default) with the template's first `crop_start` tokens (BOS and
    the system part, 95 for HunyuanVideo's Llama-3 tokenizer) cut off. The
    pipeline keeps the padded [max_sequence_length, D] block and an attention
    mask; here only the rows whose mask is 1 are returned (the prompt's tokens
    and the template's closing `<|eot_id|>`, unless truncated), which is what
    a record stores (`records.add_embeddings`: per-group lengths).
  * pooled [P]: the CLIP text model's (`text_encoder_2/`) pooled output of the
    prompt (no template), tokenized by `tokenizer_2` to 77 tokens.

`HunyuanTextEncoder` has `HashedTextEncoder`'s interface (text_encoder.py):
`enc(text) -> (embeddings float16 [L, D], pooled float16 [P])` and
`enc.embed_record(record)`, so it can replace that stand-in when building a
dataset. `enc.encode(texts)` is the batched float32 form the tests compare
with diffusers. Load it from a local HunyuanVideo pipeline folder (nothing is
downloaded):

  enc = HunyuanTextEncoder.from_folder("/models/HunyuanVideo")
  # reads text_encoder/ tokenizer/ text_encoder_2/ tokenizer_2/

`text_encoder/` holds a Llama model (model_type 'llama': the LlamaModel that
diffusers' HunyuanVideo folders hold, or a LlamaForCausalLM, whose `model.`
part is used). A LLaVA folder (model_type 'llava', e.g. HunyuanVideo-I2V's
LlavaForConditionalGeneration) is accepted too: its language model is used,
text only (the I2V pipeline's image tokens and template are not reproduced).
Compute runs in float32 on the CPU unless `dtype`/`device` say otherwise
(dtype="bfloat16" loads as `HunyuanVideoPipeline.from_pretrained(...,
torch_dtype=torch.bfloat16)` does, RoPE frequencies kept in float32;
tests/test_hunyuan_text.py finds both dtypes equal to encode_prompt's bits
on tiny random models); the pipeline then casts to the
transformer's dtype (bfloat16), records store float16. Prompts longer than
`max_sequence_length` (or CLIP's 77 tokens) are truncated silently, as the
pipeline truncates them (it warns for CLIP only).

Command line (prints the shapes):
  python -m lct_jax.data.hunyuan_text --text_encoders DIR --prompt "a cat"
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

import numpy as np

from lct_jax.data import records

# diffusers' pipeline_hunyuan_video.DEFAULT_PROMPT_TEMPLATE (checked equal by
# tests/test_hunyuan_text.py).
DEFAULT_TEMPLATE = (
    "<|start_header_id|>system<|end_header_id|>\n\nDescribe the video by "
    "detailing the following aspects: "
    "1. The main content and theme of the video."
    "2. The color, shape, size, texture, quantity, text, and spatial "
    "relationships of the objects."
    "3. Actions, events, behaviors temporal relationships, physical movement "
    "changes of the objects."
    "4. background environment, light, style and atmosphere."
    "5. camera angles, movements, and transitions used in the video:<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>")
DEFAULT_CROP_START = 95           # tokens before the prompt, BOS included
DEFAULT_MAX_SEQUENCE_LENGTH = 256  # the pipeline's, after the crop
DEFAULT_LAYERS_TO_SKIP = 2
CLIP_MAX_LENGTH = 77              # encode_prompt's, fixed

SUBFOLDERS = {
    "text_encoder": "the Llama text encoder: a config.json of model_type "
                    "'llama', or 'llava' with a Llama language model",
    "tokenizer": "the Llama tokenizer",
    "text_encoder_2": "the CLIP text model: a config.json of model_type "
                      "'clip_text_model'",
    "tokenizer_2": "the CLIP tokenizer",
}
LLM_TYPES = ("llama", "llava")
CLIP_TYPES = ("clip_text_model",)


class WrongFolderError(ValueError):
  """A folder that is not a HunyuanVideo text-encoder folder."""


def _model_type(folder: str, sub: str, expected: tuple[str, ...]) -> str:
  path = os.path.join(folder, sub, "config.json")
  try:
    with open(path) as f:
      config = json.load(f)
  except (OSError, ValueError) as e:
    raise WrongFolderError(
        f"{path}: cannot read a model config ({e}); expected "
        f"{SUBFOLDERS[sub]}") from e
  model_type = config.get("model_type")
  if model_type == "llava":     # a LLaVA whose language model is not Llama
    text_type = (config.get("text_config") or {}).get("model_type", "llama")
    model_type = "llava" if text_type == "llama" else f"llava/{text_type}"
  if model_type not in expected:
    raise WrongFolderError(
        f"{os.path.join(folder, sub)} holds a model of type {model_type!r}; "
        f"expected {SUBFOLDERS[sub]}")
  return model_type


def check_folder(folder: str) -> tuple[str, str]:
  """Raises WrongFolderError unless `folder` has the four text subfolders of a
  HunyuanVideo pipeline folder with the right kinds of model; returns the two
  models' types."""
  if not os.path.isdir(folder):
    raise WrongFolderError(f"{folder} is not a folder; expected a HunyuanVideo "
                           f"pipeline folder with {', '.join(SUBFOLDERS)}/")
  missing = [s for s in SUBFOLDERS
             if not os.path.isdir(os.path.join(folder, s))]
  if missing:
    raise WrongFolderError(
        f"{folder} is not a HunyuanVideo text-encoder folder: it lacks "
        + "; ".join(f"{s}/ ({SUBFOLDERS[s]})" for s in missing))
  return (_model_type(folder, "text_encoder", LLM_TYPES),
          _model_type(folder, "text_encoder_2", CLIP_TYPES))


def _torch_dtype(torch, dtype):
  return getattr(torch, dtype) if isinstance(dtype, str) else dtype


class HunyuanTextEncoder:
  """text -> (embeddings float16 [L, D], pooled float16 [P]), HunyuanVideo's.

  `text_encoder`: a transformers LlamaModel; `text_encoder_2`: a
  CLIPTextModel; the tokenizers: the ones saved with them. `crop_start` must
  be the token count of the template's part before "{}" (BOS included) for
  this tokenizer: 95 for HunyuanVideo's. `max_sequence_length`: the prompt
  tokens kept after the crop (longer prompts are truncated, as the
  pipeline does).
  """

  def __init__(self, text_encoder, tokenizer, text_encoder_2, tokenizer_2, *,
               template: str = DEFAULT_TEMPLATE,
               crop_start: int = DEFAULT_CROP_START,
               max_sequence_length: int = DEFAULT_MAX_SEQUENCE_LENGTH,
               num_hidden_layers_to_skip: int = DEFAULT_LAYERS_TO_SKIP,
               clip_max_length: int = CLIP_MAX_LENGTH,
               batch_size: int = 8):
    if "{}" not in template:
      raise ValueError(f"the template needs a '{{}}' for the prompt: "
                       f"{template!r}")
    n_layers = text_encoder.config.num_hidden_layers
    if not 0 <= num_hidden_layers_to_skip <= n_layers:
      raise ValueError(f"num_hidden_layers_to_skip={num_hidden_layers_to_skip}"
                       f" must be in [0, {n_layers}] (the LLM's layers)")
    if crop_start < 0 or max_sequence_length < 1 or batch_size < 1:
      raise ValueError(f"need crop_start >= 0, max_sequence_length >= 1, "
                       f"batch_size >= 1; got {crop_start}, "
                       f"{max_sequence_length}, {batch_size}")
    self.text_encoder, self.tokenizer = text_encoder.eval(), tokenizer
    self.text_encoder_2, self.tokenizer_2 = text_encoder_2.eval(), tokenizer_2
    self.template, self.crop_start = template, crop_start
    self.max_sequence_length = self.max_len = max_sequence_length
    self.num_hidden_layers_to_skip = num_hidden_layers_to_skip
    self.clip_max_length, self.batch_size = clip_max_length, batch_size
    self.dim = text_encoder.config.hidden_size
    self.pooled_dim = text_encoder_2.config.hidden_size
    prefix = len(tokenizer(template.split("{}")[0]).input_ids)
    if prefix != crop_start:
      warnings.warn(
          f"crop_start={crop_start}, but the template's part before the "
          f"prompt is {prefix} tokens (BOS included) with this tokenizer: "
          "the embeddings would keep part of the template or lose the "
          "prompt's first tokens; pass crop_start for this tokenizer")

  @classmethod
  def from_folder(cls, folder: str, *, device="cpu", dtype="float32",
                  **options) -> "HunyuanTextEncoder":
    """Loads text_encoder/, tokenizer/, text_encoder_2/, tokenizer_2/ of a
    local HunyuanVideo pipeline folder (no download). `dtype`: "float32",
    "bfloat16", "float16" or a torch dtype; `options`: the constructor's."""
    llm_type, _ = check_folder(folder)
    # torch and transformers are optional dependencies (the `text` extra).
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
    dtype = _torch_dtype(torch, dtype)
    sub = lambda s: os.path.join(folder, s)
    load = dict(dtype=dtype, local_files_only=True)
    if llm_type == "llava":
      llava = transformers.LlavaForConditionalGeneration.from_pretrained(
          sub("text_encoder"), **load)
      text_encoder = llava.model.language_model   # a LlamaModel
      del llava
    else:
      text_encoder = transformers.LlamaModel.from_pretrained(
          sub("text_encoder"), **load)
    text_encoder_2 = transformers.CLIPTextModel.from_pretrained(
        sub("text_encoder_2"), **load)
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        sub("tokenizer"), local_files_only=True)
    tokenizer_2 = transformers.AutoTokenizer.from_pretrained(
        sub("tokenizer_2"), local_files_only=True)
    return cls(text_encoder.to(device), tokenizer, text_encoder_2.to(device),
               tokenizer_2, **options)

  @property
  def device(self):
    return next(self.text_encoder.parameters()).device

  def _encode_batch(self, texts: list[str]):
    import torch  # pylint: disable=g-import-not-at-top
    device = self.device
    with torch.no_grad():
      # _get_llama_prompt_embeds
      llm_in = self.tokenizer(
          [self.template.format(t) for t in texts],
          max_length=self.crop_start + self.max_sequence_length,
          padding="max_length", truncation=True, return_tensors="pt",
          return_attention_mask=True)
      mask_BxS = llm_in.attention_mask.to(device)
      hidden_BxSxD = self.text_encoder(
          input_ids=llm_in.input_ids.to(device), attention_mask=mask_BxS,
          output_hidden_states=True,
      ).hidden_states[-(self.num_hidden_layers_to_skip + 1)]
      hidden_BxSxD = hidden_BxSxD[:, self.crop_start:]
      mask_BxS = mask_BxS[:, self.crop_start:].bool()
      # _get_clip_prompt_embeds (the prompt itself, no template)
      clip_in = self.tokenizer_2(
          texts, padding="max_length", max_length=self.clip_max_length,
          truncation=True, return_tensors="pt")
      pooled_BxP = self.text_encoder_2(
          clip_in.input_ids.to(device), output_hidden_states=False
      ).pooler_output
    to_np = lambda x: x.detach().to("cpu", torch.float32).numpy()
    return [(to_np(h[m]), to_np(p))
            for h, m, p in zip(hidden_BxSxD, mask_BxS, pooled_BxP)]

  def encode(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(embeddings [L_i, D], pooled [P])] per text, float32 arrays of the
    compute dtype's values, in batches of `batch_size`."""
    texts = [t.decode() if isinstance(t, bytes) else str(t) for t in texts]
    out = []
    for i in range(0, len(texts), self.batch_size):
      out += self._encode_batch(texts[i:i + self.batch_size])
    return out

  def __call__(self, text: str):
    emb_LxD, pooled_P = self.encode([text])[0]
    return emb_LxD.astype(np.float16), pooled_P.astype(np.float16)

  def embed_record(self, record: dict) -> dict:
    """A copy of `record` with its prompts' embeddings and pooled added."""
    return embed_record(record, self)


def record_texts(record: dict) -> list[str]:
  """The record's prompts in group order: global prompt, then each shot's."""
  texts = [record["global_prompt"], *record["shot_prompts"]]
  return [t.decode() if isinstance(t, bytes) else str(t) for t in texts]


def embed_record(record: dict, encoder) -> dict:
  """A copy of `record` with `prompt_embeddings`, `prompt_embedding_len` and
  `prompt_pooled` (float16) of its N + 1 prompts. `encoder`: a
  HunyuanTextEncoder (all prompts in batches) or any callable
  text -> (embeddings [L, D], pooled [P] or None)."""
  texts = record_texts(record)
  if hasattr(encoder, "encode"):
    outs = encoder.encode(texts)
  else:
    outs = [encoder(t) for t in texts]
  pooled = [p for _, p in outs]
  pooled_GxP = (None if any(p is None for p in pooled)
                else np.stack(pooled).astype(np.float16))
  return records.add_embeddings(
      record, [np.asarray(e, np.float16) for e, _ in outs], pooled_GxP)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m lct_jax.data.hunyuan_text",
      description="Encodes prompts with HunyuanVideo's text encoders (a local "
                  "pipeline folder) and prints the shapes.")
  parser.add_argument("--text_encoders", required=True,
                      help="HunyuanVideo pipeline folder: text_encoder/, "
                           "tokenizer/, text_encoder_2/, tokenizer_2/")
  parser.add_argument("--prompt", action="append", required=True,
                      help="a prompt (repeat for several)")
  parser.add_argument("--max_sequence_length", type=int,
                      default=DEFAULT_MAX_SEQUENCE_LENGTH)
  parser.add_argument("--crop_start", type=int, default=DEFAULT_CROP_START)
  parser.add_argument("--num_hidden_layers_to_skip", type=int,
                      default=DEFAULT_LAYERS_TO_SKIP)
  parser.add_argument("--device", default="cpu")
  parser.add_argument("--dtype", default="float32",
                      choices=("float32", "bfloat16", "float16"))
  args = parser.parse_args(argv)
  try:
    enc = HunyuanTextEncoder.from_folder(
        args.text_encoders, device=args.device, dtype=args.dtype,
        crop_start=args.crop_start,
        max_sequence_length=args.max_sequence_length,
        num_hidden_layers_to_skip=args.num_hidden_layers_to_skip)
  except WrongFolderError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for prompt, (emb, pooled) in zip(args.prompt, enc.encode(args.prompt)):
    print(f"embeddings {tuple(emb.shape)} pooled {tuple(pooled.shape)}: "
          f"{prompt!r}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
