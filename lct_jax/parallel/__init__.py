"""Meshes, the logical-axis sharding table, and parameter shardings."""
from lct_jax.parallel.logical import MESH_AXES, RULES, constrain, logical_to_spec
from lct_jax.parallel.mesh import make_mesh, mesh_shape, parse_mesh
