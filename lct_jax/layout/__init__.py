"""Scene layout: static geometry, per-example validity and 3D RoPE positions."""
from lct_jax.layout.geometry import SceneGeometry
from lct_jax.layout.layout import TokenLayout, build_layout, patched_frames
from lct_jax.layout.rope import apply_rope, rope_tables, validate_axes
