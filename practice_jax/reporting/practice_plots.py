"""PNG pictures of the practice loop (python -m practice_jax.practice), from ledger runs.

- compare_<ids>.png: the learning curves of several attempts overlaid, one colour per
  attempt (train dashed, validation solid with dots, test a star), against epochs when
  every attempt counts epochs (so runs of different batch sizes line up), else steps.
  Accuracies above 90% are drawn as error rates on a log axis, as in learning_curves.png.
- history_<experiment>.png: the personal best of the monitored metric against the
  attempt number and against the cumulative practice time; each attempt is a dot, the
  best so far a step line, attempts that met the target are filled green.
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

ERROR_FLOOR = 1e-4


def _fmt_percent(t: float, _=None) -> str:
  return f"{100 * t:.3g}%"


def _short(text: str, n: int = 28) -> str:
  return text if len(text) <= n else text[:n - 1] + "…"


def _panels(runs) -> list[str]:
  """The metrics worth a panel: loss first, then the monitored one, then the others the
  evaluations carry (at most three)."""
  names: list[str] = []
  for run in runs:
    monitored = (run.monitored_metric or "/").rpartition("/")[2]
    for name in ("loss", monitored, *run.metric_info):
      if name and name not in names and any(
          name in r for r in run.records if r.get("split") != "train" or name == "loss"):
        names.append(name)
  return names[:3]


def _finite(values):
  return [v for v in values if v is not None and math.isfinite(v)]


def compare_curves(runs, path: str, title: str = "") -> str | None:
  """The runs' curves overlaid, one panel per metric; returns `path`, or None when the
  runs have no evaluations to draw."""
  panels = _panels(runs)
  if not panels:
    return None
  by_epoch = all(r.steps_per_epoch for r in runs)
  fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.4), squeeze=False)
  colours = plt.get_cmap("tab10")
  for ax, name in zip(axes[0], panels):
    percent = any(r.percent(name) for r in runs)
    every = [v for r in runs for rec in r.records if name in rec for v in [rec[name]]]
    as_error = percent and _finite(every) and max(_finite(every)) > 0.9
    log = name == "loss" or as_error
    for i, run in enumerate(runs):
      colour = colours(i % 10)
      scale = 1.0 / run.steps_per_epoch if by_epoch else 1.0
      label = run.label + (f" {_short(run.note, 40)}" if run.note else "")
      for split, style in (("train", dict(linestyle="--", alpha=0.55)),
                           ("validation", dict(marker="o", markersize=3)),
                           ("test", dict(linestyle="none", marker="*", markersize=12))):
        steps, values = run.series(split, name)
        if not steps:
          continue
        if as_error:
          values = [max(1.0 - v, ERROR_FLOOR) for v in values]
        if log:
          values = [v if math.isfinite(v) and v > 0 else float("nan") for v in values]
        ax.plot([s * scale for s in steps], values, color=colour,
                label=label if split == "validation" else None, **style)
    if log:
      ax.set_yscale("log")
      ax.yaxis.set_major_formatter(ticker.FuncFormatter(
          _fmt_percent if as_error else lambda t, _: f"{t:g}"))
      ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    elif percent:
      ax.yaxis.set_major_formatter(ticker.FuncFormatter(_fmt_percent))
    ax.set_ylabel(f"error rate = 1 - {name} (log scale)" if as_error else
                  f"{name}" + (" (log scale)" if log else ""))
    ax.set_xlabel("epoch" if by_epoch else "step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle(title or "Attempts compared (train dashed, validation solid, test star)")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def history(points: list[dict[str, Any]], path: str, metric: str, *, percent: bool,
            higher_is_better: bool, title: str = "", target: float | None = None
            ) -> str | None:
  """`points`: one per attempt, oldest first, with 'value' (None for a diverged one),
  'best' (the personal best so far), 'minutes' (cumulative practice time), 'label' and
  'met' (the target: True, False or None). Up is better; accuracies above 90% are drawn
  on a log scale of their error rate (99% -> 99.5% is as far as 90% -> 95%)."""
  if not points:
    return None
  values = [p["value"] for p in points if p["value"] is not None]
  as_error = percent and higher_is_better and values and max(values) > 0.9
  y = (lambda v: max(1.0 - v, ERROR_FLOOR)) if as_error else (lambda v: v)
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), squeeze=False)
  for ax, key, xlabel in ((axes[0][0], "attempt", "attempt number"),
                          (axes[0][1], "minutes", "cumulative practice time (minutes)")):
    xs = [p[key] for p in points]
    known = [(x, p["best"]) for x, p in zip(xs, points) if p["best"] is not None]
    if known:
      ax.step([k[0] for k in known], [y(k[1]) for k in known], where="post",
              color="tab:green", linewidth=2, label="personal best")
    for p, x in zip(points, xs):
      if p["value"] is None:
        continue
      ax.plot([x], [y(p["value"])], "o", markersize=7, color="tab:blue",
              markerfacecolor="tab:green" if p["met"] else
              ("white" if p["met"] is False else "tab:blue"))
      ax.annotate(p["label"], (x, y(p["value"])), textcoords="offset points",
                  xytext=(4, 4), fontsize=7)
    if target is not None:
      ax.axhline(y(target), color="0.4", linestyle="--", linewidth=1, label="target")
    diverged = [x for p, x in zip(points, xs) if p["value"] is None]
    for x in diverged:
      ax.axvline(x, color="tab:red", linestyle=":", linewidth=1)
    ax.plot([], [], "o", color="tab:blue", markerfacecolor="white",
            label="an attempt (filled green: target met)")
    if diverged:
      ax.plot([], [], ":", color="tab:red", label="a diverged or unfinished attempt")
    if as_error:
      ax.set_yscale("log")
      ax.invert_yaxis()
      ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda t, _: _fmt_percent(1 - t)))
      ax.yaxis.set_minor_formatter(ticker.NullFormatter())
      ax.yaxis.set_major_locator(ticker.FixedLocator(
          [m * 10.0 ** -k for k in range(0, 5) for m in (5, 3, 2, 1)]))
      ax.set_ylabel(f"{metric}, up is better\n(log scale of 1 - {metric.rpartition('/')[2]})")
    else:
      ax.yaxis.set_major_formatter(ticker.FuncFormatter(
          _fmt_percent if percent else lambda t, _: f"{t:.4g}"))
      if not higher_is_better:
        ax.invert_yaxis()
      ax.set_ylabel(f"{metric}, up is better")
    if key == "attempt":
      ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
