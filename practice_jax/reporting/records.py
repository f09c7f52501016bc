"""The machine-readable record every run leaves in its workdir (run.json).

It holds what is needed to trust and compare attempts later: the resolved config, seed,
code version, devices, the final metrics and the wall time.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from typing import Any

import jax

import practice_jax

RUN_FILE = "run.json"


def code_version() -> str:
  """The git commit of the code (with '+dirty' for local changes), else the package version."""
  here = os.path.dirname(os.path.abspath(practice_jax.__file__))
  try:
    commit = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    return commit + ("+dirty" if dirty else "")
  except (OSError, subprocess.SubprocessError):
    return f"practice_jax {practice_jax.__version__}"


def environment() -> dict[str, Any]:
  import flax
  import optax
  return {
      "code_version": code_version(),
      "python": platform.python_version(),
      "jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
      "backend": jax.default_backend(),
      "devices": [str(d) for d in jax.devices()],
      "processor": platform.processor() or platform.machine(),
      "cpu_count": os.cpu_count(),
      "host": platform.node(),
  }


def now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_run_record(workdir: str, record: dict[str, Any]) -> None:
  path = os.path.join(workdir, RUN_FILE)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(record, f, indent=2, sort_keys=True, default=str)
  os.replace(tmp, path)



def read_run_record(workdir: str) -> dict[str, Any] | None:
  """The run.json a finished run left in `workdir`, or None."""
  try:
    with open(os.path.join(workdir, RUN_FILE), encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None
