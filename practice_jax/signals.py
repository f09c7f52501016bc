"""Stopping cleanly on SIGTERM/SIGINT: the loop saves a checkpoint and exits.

Signal handlers belong to the process, so there is one stop state per process:
``install()`` takes SIGTERM and SIGINT from start-up on (``main`` calls it right after
``jax.distributed.initialize()``, whose preemption service would otherwise take SIGTERM
and only set a flag of its own that nothing reads), and every ``StopSignals`` is a view
of that state, so a signal that arrives while the data loads or the step compiles is
the one the loop stops for at its first check.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _State:
  signum: int | None = None
  previous: dict[int, Any] = {}   # the handlers to restore; empty while not installed


_state = _State()


def _handle(signum, frame):
  del frame
  _state.signum = signum
  name = signal.Signals(signum).name
  # os.write, not print: a handler may run in the middle of another print.
  os.write(2, f"\n{name} received: the run saves a checkpoint and stops after the current "
              f"step; send it again to stop at once, without saving (the last checkpoint "
              f"stays; the same command continues from it).\n".encode())
  # A second signal acts at once (the default: the process ends), even while XLA runs;
  # checkpoints are atomic, so nothing is half-written.
  for sig in _state.previous:
    signal.signal(sig, signal.SIG_DFL)


def install() -> None:
  """From now on SIGTERM and SIGINT only record the signal, for the loop to stop at.
  Installs the handlers again if they are installed already (JAX's preemption service may
  have replaced SIGTERM's meanwhile), keeping any signal already received."""
  if threading.current_thread() is not threading.main_thread():
    return
  first = not _state.previous
  if first:
    _state.signum = None
  previous = {sig: signal.signal(sig, _handle) for sig in _SIGNALS}
  if first:
    _state.previous = previous
  if _state.signum is not None:   # a signal came already: the next one acts at once
    for sig in _SIGNALS:
      signal.signal(sig, signal.SIG_DFL)


def pending() -> int | None:
  """The stop signal received so far, if any."""
  return _state.signum


def release() -> None:
  """Restores the handlers from before install(): signals act normally again."""
  for sig, handler in _state.previous.items():
    signal.signal(sig, handler)
  _state.previous = {}


class StopSignals:
  """While active, SIGTERM and SIGINT only set `signum`; the loop checks it after each
  chunk, saves and stops cleanly instead of dying mid-step. Entering it where
  ``install()`` ran already keeps the handlers and any signal they received."""

  @property
  def signum(self) -> int | None:
    return _state.signum

  def __enter__(self):
    if not _state.previous:
      install()
    return self

  def agreed_signal(self, process_count: int) -> int | None:
    """The signal to stop for; with several processes, the first any of them received,
    so that all stop and save at the same step."""
    if process_count == 1:
      return self.signum
    from jax.experimental import multihost_utils
    import numpy as np   # here: main installs the handlers before numpy loads
    seen = np.asarray(multihost_utils.process_allgather(np.int32(self.signum or 0)))
    return int(seen.max()) or None

  def release(self) -> None:
    """Restores the previous handlers: signals act normally again."""
    release()

  def __exit__(self, *exc):
    self.release()
