"""A stand-in for a frozen text encoder: fixed random embeddings per token.

Real runs precompute T5 / LLM embeddings of every prompt and store them in the
scene records (`records.add_embeddings`). To exercise that path (schema,
builders, pipeline, `model.text_mode='embeddings'`) without a multi-GB
encoder, `HashedTextEncoder` maps each vocabulary token to a fixed Gaussian
vector (a pure function of the seed) and adds a sinusoid of the token's
position, so that word order matters as it does for a real encoder. The
pooled vector is the mean token embedding through a fixed projection.
"""
from __future__ import annotations

import numpy as np

from lct_jax.data import records, vocab


class HashedTextEncoder:
  """text -> (embeddings float16 [L, D], pooled float16 [P] or None)."""

  def __init__(self, dim: int, pooled_dim: int = 0, *, seed: int = 0,
               max_len: int = 64):
    if dim < 1 or pooled_dim < 0:
      raise ValueError(f"need dim >= 1 and pooled_dim >= 0, got {dim}, "
                       f"{pooled_dim}")
    rng = np.random.default_rng([seed, dim, pooled_dim])
    self.dim, self.pooled_dim, self.max_len = dim, pooled_dim, max_len
    self._table_VxD = rng.standard_normal((vocab.VOCAB_SIZE, dim)) / 2
    pos = np.arange(max_len)[:, None] / 10000 ** (np.arange(dim)[None] / dim)
    self._pos_LxD = 0.1 * np.sin(pos + (np.arange(dim) % 2) * np.pi / 2)
    self._proj_DxP = (rng.standard_normal((dim, pooled_dim)) / np.sqrt(dim)
                      if pooled_dim else None)

  def __call__(self, text: str):
    ids, length = vocab.encode(text, self.max_len)
    emb_LxD = self._table_VxD[ids[:length]] + self._pos_LxD[:length]
    pooled_P = None
    if self._proj_DxP is not None:
      mean_D = emb_LxD.mean(0) if length else np.zeros(self.dim)
      pooled_P = (mean_D @ self._proj_DxP).astype(np.float16)
    return emb_LxD.astype(np.float16), pooled_P

  def embed_record(self, record: dict) -> dict:
    """A copy of `record` with its prompts' embeddings (and pooled) added."""
    texts = [record["global_prompt"], *record["shot_prompts"]]
    texts = [t.decode() if isinstance(t, bytes) else t for t in texts]
    outs = [self(t) for t in texts]
    pooled = (np.stack([p for _, p in outs]) if self.pooled_dim else None)
    return records.add_embeddings(record, [e for e, _ in outs], pooled)
