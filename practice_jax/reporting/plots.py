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
