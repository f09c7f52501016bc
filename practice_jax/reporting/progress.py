"""Console progress: a bar with the step, epoch, latest train metrics, steps/s and ETA.

On a terminal the bar redraws in place at every update; in a log file (not a TTY) it
prints a line at most every `log_interval_s` seconds, and at the end. Speed is measured over the steps since the previous update, so the
one-off compilation of the first chunk does not distort the ETA for long.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_duration(seconds: float) -> str:
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def format_metrics(values: dict[str, float], kinds: dict | None = None) -> str:
  """'loss 0.1234 accuracy 98.76%': fractions (a metric whose kind says `percent`) as
  percentages, everything else with four decimals; the same format everywhere."""
  kinds = kinds or {}
  return " ".join(f"{k} {v:.2%}" if getattr(kinds.get(k), "percent", False) else f"{k} {v:.4f}"
                  for k, v in values.items())


class Progress:

  def __init__(self, total_steps: int, steps_per_epoch: int | None, start_step: int = 0,
               stream: TextIO | None = None, width: int = 24, log_interval_s: float = 15.0,
               metrics: dict | None = None):
    self.total_steps = total_steps
    self.steps_per_epoch = steps_per_epoch
    self.metrics = metrics
    self.stream = stream or sys.stdout
    self.width = width
    self.is_tty = self.stream.isatty()
    self.log_interval_s = log_interval_s
    self._last_print = -float("inf")
    self._last_step = start_step
    self._last_time = time.perf_counter()
    self.steps_per_s: float | None = None
    self._updates = 0
    # Model FLOPs utilisation (flops.py): shown once both are known.
    self.flops_per_step: float | None = None
    self.peak_flops: float | None = None        # of all devices together
    self._timed_steps, self._timed_s = 0, 0.0    # from the second chunk on

  def mean_steps_per_s(self) -> float | None:
    """Train steps per second over the chunks after the first (compiling)."""
    return self._timed_steps / self._timed_s if self._timed_s > 0 else None

  def mfu(self, steps_per_s: float | None = None) -> float | None:
    rate = steps_per_s if steps_per_s is not None else self.steps_per_s
    if not (rate and self.flops_per_step and self.peak_flops):
      return None
    return rate * self.flops_per_step / self.peak_flops

  def update(self, step: int, metrics: dict[str, float]) -> None:
    now = time.perf_counter()
    self._updates += 1
    # The first chunk includes compiling the step: its rate would promise an ETA of hours
    # on a run of minutes, so rates (and the ETA) start from the second chunk.
    if step > self._last_step and self._updates > 1:
      rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
      self._timed_steps += step - self._last_step
      self._timed_s += now - self._last_time
      # Smooth so that one slow chunk (a compile, a checkpoint) does not swing the ETA.
      self.steps_per_s = rate if self.steps_per_s is None else 0.7 * self.steps_per_s + 0.3 * rate
    self._last_step, self._last_time = step, now
    done = step / max(self.total_steps, 1)
    bar = "#" * int(done * self.width)
    parts = [f"[{bar:<{self.width}}] step {step}/{self.total_steps}"]
    if self.steps_per_epoch:
      parts.append(f"epoch {step / self.steps_per_epoch:.2f}")
    parts.append(format_metrics(metrics, self.metrics))
    if self.steps_per_s:
      eta = (self.total_steps - step) / self.steps_per_s
      parts.append(f"{self.steps_per_s:.1f} steps/s")
      if self.flops_per_step:
        from practice_jax.flops import format_rate
        rate = format_rate(self.steps_per_s * self.flops_per_step)
        mfu = self.mfu()
        parts.append(rate + (f" (MFU {100 * mfu:.1f}%)" if mfu is not None else ""))
      parts.append(f"ETA {format_duration(eta)}")
    line = " | ".join(parts)
    if self.is_tty:
      self.stream.write("\r\033[K" + line)
    elif now - self._last_print >= self.log_interval_s or step >= self.total_steps:
      self.stream.write(line + "\n")
      self._last_print = now
    self.stream.flush()

  def message(self, text: str) -> None:
    """Prints a line of its own (an epoch summary) without breaking the bar."""
    if self.is_tty:
      self.stream.write("\r\033[K")
    self.stream.write(text + "\n")
    self.stream.flush()
