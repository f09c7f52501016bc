"""A run's workdir: one config per workdir, what a run writes there, and reading it back."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from typing import Any

import ml_collections

from practice_jax import tasks
from practice_jax.config_base import base_config, upgrade
from practice_jax.errors import UserError
from practice_jax.reporting import records, writers

CONFIG_FILE = "config.json"
LAST, BEST = "checkpoints", "best_checkpoint"

# Keys that say where data lives, not what is trained: they may differ between machines.
# Keys that say how the work is laid out over devices: every layout trains the same
# trajectory (tests/test_parallel.py), so a run may continue on other hardware.
# Keys that say what is kept and shown, not what is trained, may change too.
_PORTABLE_KEYS = ("data.data_dir", "data.manual_dir", "data.stream_threads",
                  "data.stream_prefetch", "parallel.mode", "parallel.mesh_shape",
                  "parallel.fsdp_min_size", "keep_checkpoints", "plots",
                  "data.cache_dir", "data.decode_threads", "target")
# What a run writes in its workdir besides the tasks' own files (their OUTPUTS).
_RUN_OUTPUTS = (LAST, BEST, LAST + "_corrupt", writers.METRICS_FILE, "tensorboard",
                records.RUN_FILE, "learning_curves.png", "init_from.json")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(_flatten(value, f"{prefix}{key}."))
    return out
  return {prefix[:-1]: tree}


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
  """'key: old -> new' for every key that differs (paths to data excepted)."""
  a, b = _flatten(old), _flatten(new)
  return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
          if k not in _PORTABLE_KEYS and a.get(k) != b.get(k)]


def _with_new_keys(old: dict, config: ml_collections.ConfigDict) -> dict:
  """`old` (a stored config) with the keys added to practice_jax since it was written,
  at their defaults: a new key's default keeps the behaviour from before it existed, so
  a run made then resumes unless the new config sets the key otherwise."""
  from practice_jax import config_base
  try:
    defaults = config_base.base_config(config.task.name, config.data.name,
                                       config.model.name)
  except (KeyError, ValueError):
    return old
  # Only keys the new config has (a task with its own model section, as ppo, has no
  # registered model's settings: they are not new keys of its runs).
  present = _flatten(json.loads(config.to_json_best_effort()))
  merged = {k: v for k, v in _flatten(json.loads(defaults.to_json_best_effort())).items()
            if k in present}
  merged.update(_flatten(old))
  out: dict = {}
  for key, value in merged.items():
    node = out
    *parents, last = key.split(".")
    for part in parents:
      node = node.setdefault(part, {})
    node[last] = value
  return out


def check(workdir: str, config: ml_collections.ConfigDict, on_config_change: str
          ) -> list[str]:
  """Refuses an unwritable workdir, and mixing two configs in one unless told what to do;
  writes nothing."""
  existing = os.path.abspath(workdir)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing) or not os.access(existing, os.W_OK):
    reason = "is a file" if not os.path.isdir(existing) else "is not writable"
    raise UserError(f"Cannot write to the workdir {workdir} ({existing} {reason}); pass a "
                    f"writable folder with --workdir.")
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path) or not os.path.isdir(os.path.join(workdir, LAST)):
    return []
  with open(path, encoding="utf-8") as f:
    old = json.load(f)
  differences = config_differences(_with_new_keys(old, config),
                                   json.loads(config.to_json_best_effort()))
  if differences and on_config_change == "refuse":
    shown = "; ".join(differences[:5]) + (f"; and {len(differences) - 5} more"
                                          if len(differences) > 5 else "")
    raise UserError(
        f"{workdir} holds a run with a different config ({shown}); pass "
        f"--config_change=continue to go on from its checkpoint with the new config, "
        f"--config_change=restart to delete that run's checkpoints and results and start "
        f"over, or choose another --workdir.")
  return differences


def delete_run(workdir: str) -> None:
  for name in _RUN_OUTPUTS + tuple(tasks.output_files()):
    target = os.path.join(workdir, name)
    if os.path.isdir(target):
      shutil.rmtree(target)
    elif os.path.exists(target):
      os.remove(target)


def prepare(workdir: str, config: ml_collections.ConfigDict) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, CONFIG_FILE), "w", encoding="utf-8") as f:
      f.write(config.to_json_best_effort(indent=2))
  except OSError as e:
    raise UserError(f"Cannot write to the workdir {workdir} ({e.strerror}); pass a "
                    f"writable folder with --workdir.") from None


def _merge(base: ml_collections.ConfigDict, stored: dict) -> None:
  for key, value in stored.items():
    if key not in base:
      continue
    if isinstance(base[key], ml_collections.ConfigDict) and isinstance(value, dict):
      _merge(base[key], value)
    else:
      base[key] = tuple(value) if isinstance(value, list) else value


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run in `workdir` was trained with, in today's layout (keys added since
  take their defaults), on this machine's devices in the default layout."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise UserError(f"{workdir} holds no practice_jax run (no {CONFIG_FILE}); pass the "
                    f"--workdir of a run started with python -m practice_jax.main.")
  with open(path, encoding="utf-8") as f:
    stored = upgrade(json.load(f))
  config = base_config(stored["task"]["name"], stored["data"]["name"],
                       stored["model"]["name"])
  _merge(config, {k: v for k, v in stored.items() if k != "parallel"})
  return config


LOCK_FILE = ".lock"
HEARTBEAT_S = 30.0          # how often a running trainer touches its lock
STALE_AFTER_S = 300.0       # a lock from another host untouched this long is abandoned


def process_alive(pid: int) -> bool:
  """Whether process `pid` exists on this host (one of another user counts)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class WorkdirLock:
  """One run per workdir: a lock file naming its holder (host, pid, since when), taken
  atomically (O_EXCL), touched every HEARTBEAT_S by a background thread and removed when
  the run ends. A lock left by a killed process is taken over: on this host when its pid
  is gone, from another host (a shared file system) when it has not been touched for
  STALE_AFTER_S."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self._stop = None

  def _holder(self) -> dict[str, Any] | None:
    try:
      with open(self.path, encoding="utf-8") as f:
        holder = json.load(f)
      holder["age_s"] = time.time() - os.path.getmtime(self.path)
      return holder
    except (OSError, ValueError):
      return None

  def _stale(self, holder: dict[str, Any]) -> bool:
    if holder.get("host") == socket.gethostname():
      return not process_alive(int(holder.get("pid", -1)))
    return holder["age_s"] > STALE_AFTER_S

  def acquire(self) -> str | None:
    """Takes the lock; returns a note if a dead run's lock was taken over. Raises
    UserError naming the holder if another run holds it."""
    me = {"host": socket.gethostname(), "pid": os.getpid(),
          "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    note = None
    for _ in range(3):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        holder = self._holder()
        if holder is None:          # removed meanwhile, or half-written: look again
          time.sleep(0.2)
          if self._holder() is None and os.path.exists(self.path):
            os.remove(self.path)
          continue
        if not self._stale(holder):
          raise UserError(
              f"{os.path.dirname(self.path)} is in use by another run (pid "
              f"{holder.get('pid')} on {holder.get('host')}, since {holder.get('since')}); "
              f"wait for it to finish, stop it, or choose another --workdir.") from None
        note = (f"note: took over the lock of a run that is gone (pid {holder.get('pid')} "
                f"on {holder.get('host')}, since {holder.get('since')}).")
        os.remove(self.path)
        continue
      with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(me, f)
      self._start_heartbeat()
      return note
    raise UserError(f"Could not take the lock {self.path}; another run keeps changing it.")

  def _start_heartbeat(self) -> None:
    self._stop = threading.Event()

    def beat(stop=self._stop):
      while not stop.wait(HEARTBEAT_S):
        try:
          os.utime(self.path)
        except OSError:
          return
    threading.Thread(target=beat, daemon=True, name="workdir-lock").start()

  def release(self) -> None:
    if self._stop is not None:
      self._stop.set()
      self._stop = None
      try:
        os.remove(self.path)
      except OSError:
        pass
