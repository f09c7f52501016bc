"""PNG plots of a run, drawn from its metrics.jsonl records.

Each picture answers one question at a glance:

- learning_curves.png: is the model still improving, and is it over-fitting? The loss is
  on a log axis with plain-number ticks (and a bits-per-character scale beside it when
  the run records bits per character); once accuracy passes 90%, it is shown as its error
  rate, 1 - accuracy, on a log axis, so that the last percent, where train and validation
  part, is as readable as the first ninety (a lower accuracy, e.g. a language model's
  next character, stays a plain percentage); dotted lines mark the epochs; a star is the
  test result.
- <split>_confusion_matrix.png: which classes are confused with which? The diagonal is
  grey with its counts; the errors are coloured on their own scale, so a cell with 3
  mistakes shows against a diagonal of 1,000; each row's recall is on the right.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import colors, ticker  # noqa: E402

_NICE_MANTISSAS = ((1,), (1, 2, 5), (1, 1.5, 2, 3, 5, 7), (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8))
_COLOURS = {"train": "tab:blue", "validation": "tab:orange", "test": "tab:red"}
ERROR_FLOOR = 1e-4      # error rates of 0 are drawn at 0.01% (a log axis has no 0)


def _log_ticks(lo: float, hi: float) -> list[float]:
  """Between 3 and 10 round numbers in [lo, hi] for a log axis (1-2-5 and finer), or []
  when even the finest set has fewer than 3 (a narrow range: linear ticks do then)."""
  for mantissas in _NICE_MANTISSAS:
    ticks = [m * 10.0 ** k for k in range(math.floor(math.log10(lo)) - 1,
                                          math.ceil(math.log10(hi)) + 1) for m in mantissas]
    ticks = [t for t in ticks if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]
    if len(ticks) >= 3:
      return ticks if len(ticks) <= 10 else ticks[::math.ceil(len(ticks) / 10)]
  return []


def _log_axis(ax, values: list[float], label=lambda t: f"{t:g}") -> None:
  """A log y axis fitted to `values`, with ticks labelled as plain numbers."""
  lo, hi = min(values), max(values)
  if hi <= lo:
    lo, hi = lo / 1.1, hi * 1.1
  pad = (hi / lo) ** 0.05
  ax.set_yscale("log")
  ax.set_ylim(lo / pad, hi * pad)
  ticks = _log_ticks(lo / pad, hi * pad)
  if ticks:
    ax.yaxis.set_major_locator(ticker.FixedLocator(ticks))
  else:
    ax.yaxis.set_major_locator(ticker.MaxNLocator(5))
  ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda t, _: label(t)))
  ax.yaxis.set_minor_formatter(ticker.NullFormatter())


def _percent(t: float) -> str:
  return f"{100 * t:.3g}%"


def _series(records, split: str, metric: str) -> tuple[list[int], list[float]]:
  points = [(r["step"], r[metric]) for r in records if r.get("split") == split and metric in r]
  return (list(map(list, zip(*points))) if points else ([], []))  # type: ignore[return-value]


def _steps_per_epoch(path: str) -> int | None:
  """From the run record beside the picture, when there is one."""
  try:
    with open(os.path.join(os.path.dirname(path), "run.json"), encoding="utf-8") as f:
      return int(json.load(f)["steps_per_epoch"]) or None
  except (OSError, ValueError, KeyError, TypeError):
    return None


def _mark_epochs(ax, steps_per_epoch: int | None, last_step: int, label: bool) -> None:
  """Dotted lines at epoch ends (at most about 12, labelled on the top panel edge)."""
  if not steps_per_epoch or last_step < steps_per_epoch:
    return
  epochs = last_step // steps_per_epoch
  every = max(1, math.ceil(epochs / 12))
  for epoch in range(every, epochs + 1, every):
    ax.axvline(epoch * steps_per_epoch, color="0.6", linestyle=":", linewidth=0.8, zorder=0)
    if label:
      text = f"epoch {epoch}" if epoch == every else f"{epoch}"
      ax.text(epoch * steps_per_epoch, 1.0, text, transform=ax.get_xaxis_transform(),
              ha="center", va="bottom", fontsize=7, color="0.4")


def learning_curves(records: list[dict[str, Any]], path: str, title: str = "", *,
                    steps_per_epoch: int | None = None) -> None:
  """Loss, and accuracy as error rate, against the step: train, validation, test.

  `steps_per_epoch` places the epoch markers (default: the run.json beside `path`)."""
  steps_per_epoch = steps_per_epoch or _steps_per_epoch(path)
  panels = [m for m in ("loss", "accuracy") if any(m in r for r in records)]
  if not panels:
    return
  fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
  last_step = max(r["step"] for r in records)
  for ax, metric in zip(axes[0], panels):
    shown: list[float] = []
    as_error = metric == "accuracy" and max(r.get(metric, 0.0) for r in records) > 0.9
    for split in ("train", "validation", "test"):
      steps, values = _series(records, split, metric)
      if not steps:
        continue
      if as_error:
        values = [max(1.0 - v, ERROR_FLOOR) for v in values]
      shown += values
      if split == "test":
        said = f"error {_percent(values[-1])}" if as_error else (
            _percent(values[-1]) if metric == "accuracy" else f"{values[-1]:.4g}")
        ax.plot(steps, values, linestyle="none", marker="*", markersize=12,
                color=_COLOURS[split], label=f"test ({said})")
      else:
        ax.plot(steps, values, marker="o" if split == "validation" else None, markersize=3,
                color=_COLOURS[split], label=split)
    if metric == "loss":
      _log_axis(ax, shown)
      ax.set_ylabel("loss (log scale)")
      _bits_per_char_scale(ax, records)
    elif as_error:
      _log_axis(ax, shown, _percent)
      ax.set_ylabel("error rate = 1 - accuracy (log scale)")
    else:
      ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda t, _: _percent(t)))
      ax.set_ylabel("accuracy")
    _mark_epochs(ax, steps_per_epoch, last_step, label=True)
    ax.set_xlabel("step" + (" (dotted: epoch ends)" if steps_per_epoch and
                            last_step >= steps_per_epoch else ""))
    ax.grid(alpha=0.3, which="major")
    ax.legend(fontsize=8)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _bits_per_char_scale(ax, records) -> None:
  """A right-hand scale in bits per character, when the records carry it (it is the loss
  in nats divided by ln 2, so one curve serves both)."""
  ratios = [r["bits_per_char"] / r["loss"] for r in records
            if "bits_per_char" in r and r.get("loss")]
  if not ratios:
    return
  ratio = float(np.median(ratios))
  right = ax.secondary_yaxis("right", functions=(lambda x: x * ratio, lambda x: x / ratio))
  lo, hi = ax.get_ylim()
  ticks = _log_ticks(lo * ratio, hi * ratio)
  right.yaxis.set_major_locator(ticker.FixedLocator(ticks) if ticks else ticker.MaxNLocator(5))
  right.yaxis.set_major_formatter(ticker.FuncFormatter(lambda t, _: f"{t:g}"))
  right.yaxis.set_minor_formatter(ticker.NullFormatter())
  right.set_ylabel("bits per character")


def confusion_matrix(cm, class_names: list[str], path: str, title: str = "") -> None:
  """Counts in every cell; the diagonal in grey, the errors coloured on their own scale
  (square-root, so single mistakes show); each row's recall on the right."""
  cm = np.asarray(cm)
  n = len(class_names)
  size = max(4.5, 0.5 * n + 2.5) if n <= 20 else 12.0
  fig, ax = plt.subplots(figsize=(size + 1.5, size))
  off = cm.astype(float).copy()
  np.fill_diagonal(off, np.nan)
  worst = max(float(np.nanmax(off)) if n > 1 else 0.0, 1.0)
  norm = colors.PowerNorm(gamma=0.5, vmin=0, vmax=worst)
  # Two layers: the diagonal in grey, then the mistakes (masked cells are transparent).
  ax.imshow(np.where(np.eye(n, dtype=bool), 1.0, np.nan), cmap="Greys", vmin=0, vmax=4)
  image = ax.imshow(np.ma.masked_invalid(off), cmap="Reds", norm=norm)
  if n <= 20:
    fontsize = 8 if n <= 12 else 6
    for i in range(n):
      for j in range(n):
        value = int(cm[i, j])
        dark = i != j and value > 0.55 * worst
        ax.text(j, i, str(value), ha="center", va="center", fontsize=fontsize,
                color="white" if dark else ("0.75" if value == 0 else "black"),
                fontweight="bold" if i == j else "normal")
    long_names = max(len(str(c)) for c in class_names) > 3
    ax.set_xticks(range(n), class_names, rotation=45 if long_names else 0,
                  ha="right" if long_names else "center", fontsize=9)
    ax.set_yticks(range(n), class_names, fontsize=9)
    support = np.maximum(cm.sum(axis=1), 1)
    recall = np.diag(cm) / support
    right = ax.secondary_yaxis("right")
    right.set_yticks(range(n), [f"{r:.1%}" for r in recall], fontsize=8)
    right.set_ylabel("recall (correct / true)")
  else:
    ticks = range(0, n, 10)
    ax.set_xticks(ticks, [class_names[i] for i in ticks], rotation=90, fontsize=7)
    ax.set_yticks(ticks, [class_names[i] for i in ticks], fontsize=7)
  ax.set_xlabel("predicted class")
  ax.set_ylabel("true class")
  bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.1 if n <= 20 else 0.04)
  bar.set_label("mistakes (count)")
  bar.ax.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  if title:
    ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def predicted_vs_actual(actual, predicted, path: str, title: str = "") -> None:
  """A regression's predictions against the truth: on the diagonal is perfect."""
  actual, predicted = np.asarray(actual, float), np.asarray(predicted, float)
  fig, ax = plt.subplots(figsize=(5.5, 5.5))
  ax.scatter(actual, predicted, s=10, alpha=0.6, color="tab:blue")
  both = np.concatenate([actual, predicted])
  lo, hi = (float(both.min()), float(both.max())) if len(both) else (0.0, 1.0)
  ax.plot([lo, hi], [lo, hi], color="0.5", linestyle="--", linewidth=1, label="perfect")
  ax.set_xlabel("actual")
  ax.set_ylabel("predicted")
  ax.legend(loc="upper left")
  if title:
    ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
