"""Checkpoints with orbax: atomic saves under <workdir>/checkpoints, keep the last K.

orbax writes each step into a temporary directory and renames it when complete, so a run
killed mid-save never leaves a half-written checkpoint that looks like the latest one.
Saves are asynchronous: training continues while the arrays are written. orbax is
imported when a Checkpointer is made (a second or more), not when this module is.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from typing import Any

from practice_jax.errors import UserError
from practice_jax.parallel import is_main_process, sync


class DiskFull(UserError):
  """A checkpoint could not be written for lack of space."""


def _is_disk_full(error: BaseException) -> bool:
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    text = str(error)
    if (getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in text
        or "os_error_code='28'" in text):
      return True
    error = error.__cause__ or error.__context__
  return False


def _size_mb(path: str) -> float:
  total = 0
  for root, _, files in os.walk(path):
    for name in files:
      try:
        total += os.path.getsize(os.path.join(root, name))
      except OSError:
        pass
  return total / 2 ** 20


class Checkpointer:

  def __init__(self, directory: str, keep: int, create: bool = True):
    import orbax.checkpoint as ocp
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        # Only the trainer (create=True) cleans up leftovers of killed saves; a reader
        # must never touch the temporary folder of a save in progress.
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=create, cleanup_tmp_directories=create,
            read_only=not create,
            # Multi-process: the last and best checkpoints of one step are saved at once;
            # their processes meet at barriers named per directory, not per step only.
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix=os.path.basename(self.directory))),
        item_names=("state", "meta"))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def _disk_full(self, step: int | None) -> DiskFull:
    done = [s for s in self.all_steps() if step is None or s < step]
    last = max(done) if done else None
    free = shutil.disk_usage(self.directory).free / 2 ** 20
    needed = _size_mb(os.path.join(self.directory, str(last))) if last is not None else 0
    kept = (f"the checkpoint of step {last} is intact" if last is not None else
            "no checkpoint was complete yet")
    return DiskFull(
        f"The disk holding {self.directory} is full: a checkpoint could not be written "
        f"({free:.1f} MB free, one checkpoint takes about {needed:.1f} MB); {kept}. Free "
        f"some space (or lower config.keep_checkpoints) and re-run the same command to "
        f"continue.")

  def _guarded(self, call, step: int | None = None):
    """Runs an orbax call; a full disk (raised by this save or by a previous one still
    finishing in the background) becomes one sentence."""
    try:
      return call()
    except Exception as e:  # noqa: BLE001 - orbax and tensorstore raise many kinds
      if _is_disk_full(e):
        raise self._disk_full(step) from None
      raise

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Saves `state` (a pytree of arrays) and `meta` (JSON) as checkpoint `step`."""
    import orbax.checkpoint as ocp
    self._guarded(lambda: self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True), step)

  def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Restores checkpoint `step` (default: latest) into the structure and shardings of
    `target`; returns (state, meta)."""
    import orbax.checkpoint as ocp
    step = self.latest_step() if step is None else step
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["meta"])

  def read_meta(self, step: int | None = None) -> dict[str, Any]:
    """Only the JSON metadata of checkpoint `step` (default: latest)."""
    import orbax.checkpoint as ocp
    step = self.latest_step() if step is None else step
    restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored["meta"])

  def restore_latest_good(self, target: Any) -> tuple[Any, dict[str, Any], list[str]]:
    """Restores the newest checkpoint that reads back into `target`; returns (state, meta,
    warnings), one warning per unreadable newer checkpoint. Those are moved (not deleted)
    to <directory>_corrupt/ so that their step can be saved again. If none restores, as
    when the model or optimizer changed, nothing is moved and a UserError says so."""
    failures = []
    for step in sorted(self.all_steps(), reverse=True):
      try:
        state, meta = self.restore(target, step)
      except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many kinds
        failures.append((step, str(e).splitlines()[0][:200] if str(e) else type(e).__name__))
        continue
      warnings = []
      for bad, reason in failures:
        aside = os.path.join(self.directory + "_corrupt", f"{bad}-{int(time.time())}")
        if is_main_process():             # one process moves; all wait for it below
          os.makedirs(os.path.dirname(aside), exist_ok=True)
          shutil.move(os.path.join(self.directory, str(bad)), aside)
        warnings.append(f"warning: checkpoint {bad} in {self.directory} is unreadable "
                        f"({reason}); moved it to {aside} and used step {step} instead.")
      if failures:
        sync("moved corrupt checkpoints")
        self._manager.reload()
      return state, meta, warnings
    raise UserError(
        f"No checkpoint in {self.directory} restores into this config's train state (the "
        f"model or optimizer may differ, or the files are damaged; first error: "
        f"{failures[0][1]}); pass --config_change=restart to start this workdir over, or "
        f"choose another --workdir.")

  def delete_after(self, step: int) -> None:
    """Deletes checkpoints later than `step`: after a resume from `step` they belong to
    a timeline that is about to be recomputed."""
    for later in self.all_steps():
      if later > step:
        self._manager.delete(later)

  def wait(self) -> None:
    """Blocks until asynchronous saves have finished."""
    self._guarded(self._manager.wait_until_finished)

  def close(self) -> None:
    try:
      self._guarded(self._manager.wait_until_finished)
    finally:
      self._manager.close()
