"""Metric writers: TensorBoard event files and JSON lines.

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
  into the record's 'split' and metric name."""

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


class TensorBoardScalars:
  """Scalars as a TensorBoard event file, written with the tensorboard package's own
  record writer and protos (as PyTorch's SummaryWriter does). CLU's SummaryWriter wrote
  the same files through TensorFlow, whose import cost ~10 CPU-seconds before the first
  step; the loop only writes scalars."""

  def __init__(self, logdir: str):
    import socket
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter
    self._event, self._summary = event_pb2.Event, summary_pb2.Summary
    os.makedirs(logdir, exist_ok=True)
    name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}.v2"
    self._file = open(os.path.join(logdir, name), "ab")
    self._records = RecordWriter(self._file)
    self._records.write(self._event(wall_time=time.time(),
                                    file_version="brain.Event:2").SerializeToString())

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    values = [self._summary.Value(tag=k, simple_value=float(v)) for k, v in scalars.items()]
    self._records.write(self._event(wall_time=time.time(), step=int(step),
                                    summary=self._summary(value=values)).SerializeToString())

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.close()


class Writers:
  """Several writers as one (what clu's MultiWriter did, for the methods the loop uses)."""

  def __init__(self, writers: list):
    self._writers = writers

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    for w in self._writers:
      w.write_scalars(step, scalars)

  def flush(self) -> None:
    for w in self._writers:
      w.flush()

  def close(self) -> None:
    for w in self._writers:
      w.close()


def create_writer(workdir: str, active: bool = True):
  """TensorBoard + JSONL writers; with `active` False (processes other than 0 of a
  multi-process run) one that writes nothing."""
  if not active:
    return Writers([])
  return Writers([TensorBoardScalars(os.path.join(workdir, "tensorboard")),
                  JsonlWriter(os.path.join(workdir, METRICS_FILE))])
