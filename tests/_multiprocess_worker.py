"""One process of the 2-process test (tests/test_multiprocess.py).

Usage: python _multiprocess_worker.py PORT PROCESS_ID OUT.npz
Four fake CPU devices per process, 8 in all; a (1, 2, 2, 2) mesh spans both
processes (ring attention over 'context'); a few train steps; process 0
writes the losses and final parameters.
"""
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402

STEPS = 3


def main(port: int, process_id: int, out: str) -> None:
  jax.config.update("jax_default_matmul_precision", "highest")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=f"localhost:{port}",
                             num_processes=2, process_id=process_id,
                             initialization_timeout=120)
  assert jax.device_count() == 8 and jax.local_device_count() == 4
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  from test_multiprocess import run_steps  # pylint: disable=g-import-not-at-top
  from lct_jax.parallel import make_mesh  # pylint: disable=g-import-not-at-top

  mesh = make_mesh(dict(data=1, fsdp=2, context=2, tensor=2))
  losses, params = run_steps(mesh)
  params = multihost_utils.process_allgather(params, tiled=True)
  if process_id == 0:
    flat = {str(i): np.asarray(x) for i, x in enumerate(jax.tree.leaves(params))}
    np.savez(out, losses=np.asarray(losses), **flat)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
