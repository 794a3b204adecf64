"""The MMDiT (docs/design.md section 5)."""
from lct_jax.model.block import DualStreamBlock, JointAttention
from lct_jax.model.kv_cache import KVCache
from lct_jax.model.mmdit import MMDiT, ModelConfig
from lct_jax.model.streams import BlockInputs, StreamKV
