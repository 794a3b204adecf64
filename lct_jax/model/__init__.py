"""The MMDiT (DESIGN.md section 3)."""
from lct_jax.model.block import BlockInputs, DualStreamBlock, JointAttention
from lct_jax.model.mmdit import MMDiT, ModelConfig
