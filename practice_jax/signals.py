"""Stopping cleanly on SIGTERM/SIGINT: the loop saves a checkpoint and exits."""

from __future__ import annotations

import signal
import threading
from typing import Any

import numpy as np


class StopSignals:
  """While active, SIGTERM and SIGINT only set `signum`; the loop checks it after each
  chunk, saves and stops cleanly instead of dying mid-step."""

  def __init__(self):
    self.signum: int | None = None
    self._previous: dict[int, Any] = {}

  def _handle(self, signum, frame):
    del frame
    self.signum = signum
    # A second signal acts at once (the default: the process ends), even while XLA runs;
    # checkpoints are atomic, so nothing is half-written.
    for sig in self._previous:
      signal.signal(sig, signal.SIG_DFL)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def agreed_signal(self, process_count: int) -> int | None:
    """The signal to stop for; with several processes, the first any of them received,
    so that all stop and save at the same step."""
    if process_count == 1:
      return self.signum
    from jax.experimental import multihost_utils
    seen = np.asarray(multihost_utils.process_allgather(np.int32(self.signum or 0)))
    return int(seen.max()) or None

  def release(self) -> None:
    """Restores the previous handlers: signals act normally again."""
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

  def __exit__(self, *exc):
    self.release()
