"""Attention under scene group masks: one dispatcher; dense, blockwise,
context-parallel and accelerator kernels."""
from lct_jax.attention.blockwise import attend_blockwise
from lct_jax.attention.blockwise import tile_schedule
from lct_jax.attention.dense import attend_dense
from lct_jax.attention.dispatch import attend
from lct_jax.attention.mask import GroupMask

__all__ = [
    "GroupMask",
    "attend",
    "attend_blockwise",
    "attend_dense",
    "tile_schedule",
]
