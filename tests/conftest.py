"""Test session setup: 8 fake CPU devices so sharding tests run anywhere.

Must run before JAX initialises its backend, hence at conftest import time.
"""
import os

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

# Tests compare against float32 references; keep matmuls at full precision.
jax.config.update("jax_default_matmul_precision", "highest")
