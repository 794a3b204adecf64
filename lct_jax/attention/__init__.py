"""Attention under scene group masks: one dispatcher; dense, blockwise,
context-parallel and accelerator kernels; segments of runs in any mesh."""
from lct_jax.attention.blockwise import attend_blockwise
from lct_jax.attention.blockwise import tile_schedule
from lct_jax.attention.dense import attend_dense
from lct_jax.attention.dispatch import attend
from lct_jax.attention.mask import GroupMask
from lct_jax.attention.segments import Keys, Queries, attend_segments

__all__ = [
    "GroupMask",
    "Keys",
    "Queries",
    "attend",
    "attend_blockwise",
    "attend_dense",
    "attend_segments",
    "tile_schedule",
]
