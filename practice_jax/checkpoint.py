"""Checkpoints with orbax: atomic saves under <workdir>/checkpoints, keep the last K.

orbax writes each step into a temporary directory and renames it when complete, so a run
killed mid-save never leaves a half-written checkpoint that looks like the latest one.
Saves are asynchronous: training continues while the arrays are written.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

import orbax.checkpoint as ocp

from practice_jax.errors import UserError
from practice_jax.parallel import is_main_process, sync


class Checkpointer:

  def __init__(self, directory: str, keep: int, create: bool = True):
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

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Saves `state` (a pytree of arrays) and `meta` (JSON) as checkpoint `step`."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

  def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Restores checkpoint `step` (default: latest) into the structure and shardings of
    `target`; returns (state, meta)."""
    step = self.latest_step() if step is None else step
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["meta"])

  def read_meta(self, step: int | None = None) -> dict[str, Any]:
    """Only the JSON metadata of checkpoint `step` (default: latest)."""
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
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
