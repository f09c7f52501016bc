"""The one writer of a run's files besides checkpoints and metrics: reports, samples and
plots. It alone knows which process writes (process 0 of a multi-process run); tasks
write through it and never ask. Every file is written to a temporary name and renamed,
so a crash never leaves half a report."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any


class Artifacts:

  def __init__(self, workdir: str, active: bool, plots: bool = True):
    self.workdir, self.active, self.plots = workdir, active, plots

  def _write(self, name: str, write: Callable[[str], None]) -> None:
    if not self.active:
      return
    path = os.path.join(self.workdir, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp" + os.path.splitext(path)[1]
    write(tmp)
    if os.path.exists(tmp):          # a plot with nothing to draw writes nothing
      os.replace(tmp, path)

  def text(self, name: str, content: str) -> None:
    def write(path):
      with open(path, "w", encoding="utf-8") as f:
        f.write(content)
    self._write(name, write)

  def json(self, name: str, value: Any) -> None:
    self.text(name, json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")

  def figure(self, name: str, draw: Callable[[str], None]) -> None:
    """`draw(path)` writes a PNG at path; skipped when the config turned plots off."""
    if self.plots:
      self._write(name, draw)
