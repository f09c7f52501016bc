"""Train one experiment: ``python -m practice_jax.main --config=configs/mnist.py``.

Flags: ``--config`` (an ml_collections config file; override any key with
``--config.optimizer.learning_rate=0.05``) and ``--workdir`` (default
``runs/<config file name>``; re-running in the same workdir resumes).
"""

from __future__ import annotations

import importlib.util
import os
import sys

if __name__ == "__main__":
  # First of all, so that a Ctrl-C or SIGTERM while the libraries import is the signal
  # the run stops for at its first check (signals.py imports nothing heavy).
  from practice_jax import signals as _signals
  _signals.install()

from absl import app, flags, logging
from ml_collections import config_flags

from practice_jax import quiet
from practice_jax.config_base import unknown_key
from practice_jax.errors import UserError


def _env_int(name: str) -> int | None:
  value = os.environ.get(name, "")
  return int(value) if value.isdigit() else None


_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/mnist.py.", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Where checkpoints, metrics and plots go (default: runs/<config name>).")
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache", "~/.cache/practice_jax/xla",
    "Persistent XLA compilation cache folder ('' to disable).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", os.environ.get("JAX_COORDINATOR_ADDRESS"),
    "Multi-process runs: host:port of process 0's coordinator (default "
    "$JAX_COORDINATOR_ADDRESS). Not needed under SLURM or on Cloud TPU VMs, which JAX "
    "detects by itself.")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", _env_int("JAX_NUM_PROCESSES"),
    "Multi-process runs: how many processes (default $JAX_NUM_PROCESSES).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", _env_int("JAX_PROCESS_ID"),
    "Multi-process runs: this process's index, 0 .. num_processes-1 (default "
    "$JAX_PROCESS_ID).")
_CONFIG_CHANGE = flags.DEFINE_enum(
    "config_change", "refuse", ["refuse", "continue", "restart"],
    "When the workdir holds a run of a different config: refuse (default), continue from "
    "its checkpoint with the new config, or restart (delete that run's results first).")
_NOTE = flags.DEFINE_string("note", "", "What this attempt tries; kept in the ledger.")
_LEDGER = flags.DEFINE_string(
    "ledger", None, "The ledger database (default: ledger.sqlite beside the workdir; '' = "
    "do not record). See python -m practice_jax.practice.")


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _load_config_file(path: str):
  spec = importlib.util.spec_from_file_location("user_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _explain_flag_error(argv: list[str], error: Exception) -> str:
  """Turns an absl/ml_collections parse failure into one sentence for the user."""
  config_path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if config_path is None:
    return "No experiment given; pass --config=configs/<name>.py (e.g. configs/mnist.py)."
  if not os.path.isfile(config_path):
    return (f"Config file {config_path} does not exist; pass the path of a file in "
            f"configs/, e.g. --config=configs/mnist.py.")
  try:
    config = _load_config_file(config_path)
  except Exception as e:  # noqa: BLE001 - any failure of user code is reported as such
    return f"Config file {config_path} could not be loaded: {type(e).__name__}: {e}."
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    key, _, value = arg[len("--config."):].partition("=")
    node, walked = config, []
    for part in key.split("."):
      if not hasattr(node, "keys") or part not in node:
        return unknown_key(config, key)
      node, walked = node[part], walked + [part]
    if hasattr(node, "keys"):
      from practice_jax.config_base import MOVED_KEYS
      if key in MOVED_KEYS:
        return f"config.{key} is a section now: use config.{MOVED_KEYS[key]}."
    expected = type(node).__name__
    if f"--config.{key}" in str(error):
      return f"config.{key}={value!r} is not a valid {expected}."
  return str(error).splitlines()[0] if str(error) else type(error).__name__


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    rest = flags.FLAGS(argv)
    if not flags.FLAGS["config"].present:
      raise ValueError("no --config")
    _ = _CONFIG.value.seed  # a config file that failed to load raises only when read
    return rest
  except Exception as e:  # noqa: BLE001 - absl and ml_collections raise several kinds
    _fail(_explain_flag_error(argv, e))


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    _fail(f"Unexpected arguments {' '.join(argv[1:])}; pass settings as --config.key=value.")
  config_path = config_flags.get_config_filename(flags.FLAGS["config"])
  workdir = _WORKDIR.value or os.path.join(
      "runs", os.path.splitext(os.path.basename(config_path))[0])
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # keep the console for progress and results
  given = {"--coordinator_address": _COORDINATOR.value, "--num_processes":
           _NUM_PROCESSES.value, "--process_id": _PROCESS_ID.value}
  missing = [name for name, value in given.items() if value is None]
  if 0 < len(missing) < 3:
    _fail(f"A multi-process run needs --coordinator_address, --num_processes and "
          f"--process_id together; {', '.join(missing)} is missing.")
  if not missing and not 0 <= _PROCESS_ID.value < _NUM_PROCESSES.value:
    _fail(f"--process_id={_PROCESS_ID.value} must be in 0..{_NUM_PROCESSES.value - 1} "
          f"(--num_processes={_NUM_PROCESSES.value}).")
  # Imported after flag parsing so that a bad flag is reported at once.
  import jax

  from practice_jax import distributed, signals
  try:
    distributed.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value,
                                       _PROCESS_ID.value)
  except UserError as e:
    _fail(str(e))
  # From here on SIGTERM/SIGINT save and stop, also while data loads or the step compiles
  # (JAX's preemption service, started above, would take SIGTERM and only set a flag).
  signals.install()

  from practice_jax import ledger, train
  from practice_jax.validation import validate
  if _COMPILATION_CACHE.value:
    # A second run of the same config reuses compiled programs instead of recompiling:
    # all of them, the small ones too (building the state, the evaluation, the data's
    # gather), which together cost the start of a run seconds (bench/startup.py).
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(_COMPILATION_CACHE.value))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  try:
    validate(_CONFIG.value, jax.device_count())  # before TensorFlow, data or compiling
    train.train_and_evaluate(_CONFIG.value, workdir, _CONFIG_CHANGE.value)
  except UserError as e:
    if isinstance(e, train.TrainingDiverged):   # a diverged attempt is practice too
      ledger.record_workdir(workdir, config_path, _NOTE.value, _LEDGER.value, "diverged")
    _fail(str(e))
  except train.Preempted as e:
    print(str(e), file=sys.stderr)
    return e.exit_code
  ledger.record_workdir(workdir, config_path, _NOTE.value, _LEDGER.value)
  return 0


def _configs_help() -> str:
  """The experiment files in configs/ with the first line of each docstring."""
  import ast
  from pathlib import Path
  folder = Path(__file__).resolve().parents[1] / "configs"
  lines = []
  for path in sorted(folder.glob("*.py")):
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    lines.append(f"  configs/{path.name:26s} {doc.splitlines()[0] if doc else ''}")
  return "Experiments (--config=...):\n" + "\n".join(lines) if lines else ""


def run() -> None:
  quiet.install()   # before TensorFlow or XLA load; --verbosity shows their lines
  if any(a in ("-h", "--help", "--helpshort", "-?") for a in sys.argv[1:]):
    # absl prints its help and exits with status 1; asking for help is not an error.
    print(__doc__.strip() + "\n\n" + _configs_help() + "\n")
    print(flags.FLAGS.main_module_help())
    sys.exit(0)
  from practice_jax import signals
  signals.install()   # a Ctrl-C while JAX and TensorFlow import is not lost in a callback
  try:
    app.run(main, flags_parser=_parse_flags)
  except KeyboardInterrupt:
    # Ctrl-C before the stop handlers are installed (while importing): no run started.
    print("\nInterrupted while starting up; no training step ran and no checkpoint was "
          "written. Run the same command again to start.", file=sys.stderr)
    sys.exit(130)


if __name__ == "__main__":
  run()
