"""Metric writers: TensorBoard event files (CLU's SummaryWriter) and JSON lines.

Every scalar written goes to both ``<workdir>/tensorboard`` and ``<workdir>/metrics.jsonl``;
the JSONL file is what plots, reports and run comparisons read (one record per line:
``{"step": ..., "split": "train", "loss": ..., ..., "time": unix seconds}``; the time
lets benchmarks measure time to a target from process start).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any

METRICS_FILE = "metrics.jsonl"


class JsonlWriter:
  """Appends one JSON object per ``write_scalars`` call; keys like 'train/loss' are split
  into the record's 'split' and metric name. It implements CLU's MetricWriter interface
  (by duck typing: importing CLU's base class would import TensorFlow)."""

  def __init__(self, path: str):
    self.path = path
    self._file = open(path, "a", encoding="utf-8")

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    by_split: dict[str, dict[str, float]] = {}
    for key, value in scalars.items():
      split, _, name = key.rpartition("/")
      by_split.setdefault(split or "train", {})[name] = float(value)
    for split, values in by_split.items():
      self._file.write(json.dumps({"step": int(step), "split": split, **values,
                                   "time": round(time.time(), 3)}) + "\n")

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self) -> None:
    """Makes the records durable: the loop flushes before every checkpoint, so a
    crash never loses a record that the checkpoint it resumes from has counted."""
    self._file.flush()
    os.fsync(self._file.fileno())

  def close(self) -> None:
    self._file.close()


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def truncate_metrics(workdir: str, last_step: int, redone_at_last: tuple[str, ...] = ()
                     ) -> None:
  """Drops records after `last_step` (a resumed run re-does those steps), and the
  records of the splits `redone_at_last` at `last_step` itself (written after its
  checkpoint: the final evaluation of a run killed before its end)."""
  records = [r for r in read_metrics(workdir) if r["step"] < last_step or
             (r["step"] == last_step and r["split"] not in redone_at_last)]
  tmp = os.path.join(workdir, METRICS_FILE + ".tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)
  os.replace(tmp, os.path.join(workdir, METRICS_FILE))


def create_writer(workdir: str, active: bool = True):
  """TensorBoard + JSONL writers; with `active` False (processes other than 0 of a
  multi-process run) one that writes nothing."""
  from clu import metric_writers  # imports TensorFlow: only when a run really starts
  if not active:
    return metric_writers.MultiWriter([])
  return metric_writers.MultiWriter([
      metric_writers.SummaryWriter(os.path.join(workdir, "tensorboard")),
      JsonlWriter(os.path.join(workdir, METRICS_FILE)),
  ])
