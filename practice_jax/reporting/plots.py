"""PNG plots of a run, drawn from its metrics.jsonl records."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def learning_curves(records: list[dict[str, Any]], path: str, title: str = "") -> None:
  """Loss and accuracy against the step, one line per split (train, validation)."""
  metrics = [m for m in ("loss", "accuracy") if any(m in r for r in records)]
  fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
  for ax, metric in zip(axes[0], metrics):
    for split in ("train", "validation"):
      points = [(r["step"], r[metric]) for r in records
                if r.get("split") == split and metric in r]
      if points:
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o" if split != "train" else None, markersize=3, label=split)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    if metric == "loss":
      ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def confusion_matrix(cm, class_names: list[str], path: str, title: str = "") -> None:
  """A confusion-matrix heat map with the counts written in the cells."""
  import numpy as np
  n = len(class_names)
  size = max(4.0, 0.45 * n + 2)
  fig, ax = plt.subplots(figsize=(size + 1, size))
  shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)   # colour by recall per row
  image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1)
  if n <= 20:
    for i in range(n):
      for j in range(n):
        ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                color="white" if shown[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), class_names, fontsize=8)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class")
  if title:
    ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
