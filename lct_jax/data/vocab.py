"""A fixed word-level tokenizer for the synthetic scenes' captions.

Text is split into words and punctuation (",", "."), lower-cased, except
the cut marker "[SHOT CUT]", which is one token. Ids:
  0 = pad, 1 = null text (classifier-free guidance dropout; see
  `lct_jax.diffusion.augment`), 2 = unknown word, 3.. = WORDS in order.
The list is fixed (not built from data) so ids never move; appending words
keeps old ids. The lighting tint's words are deliberately absent: no
caption names the tint.
"""
from __future__ import annotations

import re

import numpy as np

from lct_jax.data import synthetic

PAD_ID, NULL_ID, UNK_ID = 0, 1, 2
SPECIALS = ("<pad>", "<null>", "<unk>")

WORDS = (
    synthetic.SHOT_CUT, ",", ".",
    "character", "1", "is", "a", "on", "background", "shot",
    # identity
    "small", "large", "circle", "square", "triangle", "diamond",
    "red", "green", "blue", "yellow", "white",
    # environment (tint: never captioned)
    "plain", "striped", "checkered",
    "grey", "navy", "teal", "brown", "purple",
    # framing and action
    "wide", "medium", "close",
    "moves", "stays", "left", "right", "up", "down", "still",
)
TOKENS = SPECIALS + WORDS
ID_OF = {token: i for i, token in enumerate(TOKENS)}
VOCAB_SIZE = len(TOKENS)

# The marker first, then runs of word characters, then single punctuation.
_SPLIT = re.compile(re.escape(synthetic.SHOT_CUT) + r"|\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
  return [t if t == synthetic.SHOT_CUT else t.lower()
          for t in _SPLIT.findall(text)]


def unknown_words(text: str) -> list[str]:
  """The words of `text` outside the vocabulary, in order, once each."""
  return list(dict.fromkeys(t for t in tokenize(text) if t not in ID_OF))


def encode(text: str, max_len: int, *, truncate: bool = True,
           allow_unknown: bool = True) -> tuple[np.ndarray, int]:
  """-> (ids int32 [max_len], length); padding (id 0) after `length`.

  Text longer than max_len is cut to its first max_len tokens, or raises
  ValueError when truncate=False. Unknown words map to UNK_ID, or raise
  ValueError naming them when allow_unknown=False (sampling: a model
  trained on this vocabulary has never seen them mean anything).
  """
  if not allow_unknown:
    unknown = unknown_words(text)
    if unknown:
      raise ValueError(f"words outside the model's vocabulary: {unknown} "
                       f"(known: lct_jax/data/vocab.py WORDS)")
  ids = [ID_OF.get(t, UNK_ID) for t in tokenize(text)]
  if len(ids) > max_len:
    if not truncate:
      raise ValueError(f"{len(ids)} tokens exceed max_len={max_len}: "
                       f"{text!r}")
    ids = ids[:max_len]
  out = np.full((max_len,), PAD_ID, np.int32)
  out[:len(ids)] = ids
  return out, len(ids)


def decode(ids, length: int | None = None) -> str:
  """Tokens back to text: words space-separated, punctuation attached."""
  ids = np.asarray(ids)[:length]
  text = ""
  for i in ids.tolist():
    token = TOKENS[i] if 0 <= i < VOCAB_SIZE else "<unk>"
    text += token if (token in (",", ".") or not text) else " " + token
  return text
