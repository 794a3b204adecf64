r"""Trains an LCT model: the README's main command.

  python train.py --config configs/demo.py --workdir runs/demo
  python train.py --config configs/demo.py:causal --workdir runs/demo_causal \
      --config.train.init_from=runs/demo
  python train.py --config configs/lct_3b.py --dry_run
  python train.py --config configs/lct_3b.py --compile_for=v5p-128

Any config field can be overridden (`--config.optim.lr=1e-4`); an unknown
field is an error naming it. Rerunning the same command resumes from the
newest good checkpoint in --workdir (exactly: same batches, same numbers).
SIGTERM saves a checkpoint and exits cleanly. TensorBoard:
`tensorboard --logdir <workdir>/tb`.
"""
import signal
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from lct_jax import aot, configlib
from lct_jax.layout import SceneGeometry
from lct_jax.sampling import periodic
from lct_jax.training import abstract_model, count_params, loop

_CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py",
                                          "Config file (`path[:stage]`).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Work directory: "
                               "checkpoints, TensorBoard events, config.")
_DRY_RUN = flags.DEFINE_bool(
    "dry_run", False, "Print parameter and token counts (abstract init: no "
    "memory allocated) and exit; works for configs/lct_3b.py on a laptop.")
_COMPILE_FOR = flags.DEFINE_string(
    "compile_for", None, "Compile the train step for this TPU slice (Cloud "
    "name such as v5p-128, v6e-256, or a topology such as v5e:2x2) with the "
    "TPU compiler from libtpu (`pip install -e '.[tpu]'`; no TPU needed), "
    "print its memory per device and model FLOPs, and exit: 0 if it fits "
    "with 10% headroom, 1 if it does not fit, 2 if it fits with less.")
_COMPILE_SAMPLERS = flags.DEFINE_bool(
    "compile_samplers", False, "With --compile_for: also compile the joint "
    "sampler and one cached causal shot.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")
_LOG_BATCHES = flags.DEFINE_bool(
    "log_batches", False, "Append each step's scene ids to "
    "<workdir>/batches-<process>.jsonl (reproducibility audits).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "With train.distributed: host:port of "
    "process 0 (default: detected from the cluster environment).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "With train.distributed: process count.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "With train.distributed: this process.")
_SIGNAL_AT = flags.DEFINE_string(
    "testing_signal_at", "", "Testing only: 'STEP:SIGNAL' (e.g. 5:KILL) sends "
    "the signal to this process after that step.")


def describe(config) -> None:
  """Parameter count and scene token budget, without allocating anything."""
  geom = SceneGeometry.from_config(config)
  _, params = abstract_model(config)
  print(f"config stage={config.train.stage} "
        f"mask={config.model.attention_mask}")
  print(f"parameters: {count_params(params):,} "
        f"({count_params(params) / 1e9:.3f}B)")
  print(f"tokens per scene: {geom.seq_len:,} = {geom.num_video_slots} video "
        f"slots x {geom.tokens_per_slot:,} (grid {geom.grid}) + "
        f"{geom.num_groups} text groups x {geom.max_text_len}")


def compile_for(config, slice_name: str, samplers: bool) -> int:
  """Prints the compiled memory of the step (and samplers); the exit code."""
  # Eager work stays on the CPU even on a TPU VM: only the compiler is used.
  # (Importing jax starts no backend, so this still takes effect here.)
  jax.config.update("jax_platforms", "cpu")
  reports = [aot.compile_train_step(config, slice_name)]
  print(reports[0].table(), flush=True)
  if samplers:
    for report in aot.compile_samplers(config, slice_name):
      print("\n" + report.table(), flush=True)
      reports.append(report)
  if not all(r.fits for r in reports):
    return 1
  return 0 if all(r.headroom >= aot.HEADROOM for r in reports) else 2


def _signal_at(spec: str):
  if not spec:
    return None
  step, _, name = spec.partition(":")
  return int(step), getattr(signal, "SIG" + name.upper())


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    # orbax and grain log every save at INFO; -v 0 brings them back.
    logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  configlib.validate(config)
  if _DRY_RUN.value:
    describe(config)
    return
  if _COMPILE_FOR.value:
    try:
      code = compile_for(config, _COMPILE_FOR.value, _COMPILE_SAMPLERS.value)
    except (ValueError, RuntimeError) as e:
      sys.exit(f"error: {e}")
    sys.exit(code)
  if config.train.distributed:
    # CPU processes need a collectives backend (GPU/TPU ignore this).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # Unset flags: detected from the cluster (TPU pod, SLURM, ...).
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)
  result = loop.train(config, _WORKDIR.value, progress=_PROGRESS.value,
                      log_batches=_LOG_BATCHES.value,
                      signal_at_step=_signal_at(_SIGNAL_AT.value),
                      write_samples=periodic.write_samples)
  logging.info("finished: %s", result)
  print(f"done: step {result.step}, loss {result.last_loss}, skipped steps "
        f"{result.skipped}, bad records {result.bad_records}"
        + (" (preempted)" if result.preempted else ""), flush=True)


def _config_path(argv: list[str]) -> str:
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return "configs/demo.py"


def parse_flags(argv: list[str]) -> list[str]:
  """absl parsing, with unknown `--config.x.y` fields named plainly."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:
    try:
      config = configlib.load(_config_path(argv))
    except Exception:  # pylint: disable=broad-except
      raise e from None
    for arg in argv[1:]:
      if not arg.startswith("--config."):
        continue
      path = arg[len("--config."):].split("=", 1)[0].split(".")
      node = config
      for i, key in enumerate(path):
        if not hasattr(node, "keys") or key not in node:
          where = ".".join(path[:i]) or "the config"
          options = ", ".join(sorted(node.keys())) if hasattr(
              node, "keys") else "-"
          sys.exit(f"error: unknown config field '{'.'.join(path)}' in {arg}"
                   f" ({where} has: {options})")
        node = node[key]
    raise


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
