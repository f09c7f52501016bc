"""PNG pictures of hyperparameter sweeps (python -m practice_jax.sweep).

- best_vs_trials.png: the best value of the sweep's metric against the number of trials
  spent (finished, pruned or failed), as a step line, and each trial's own value as a
  faint dot; with several sweeps (``sweep
  compare``) one line per sweep, so grid, random and TPE search are compared at the same
  budget.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402


def best_vs_trials(curves: dict[str, list[float | None]], metric: str, path: str,
                   title: str = "", trials: dict[str, list[float | None]] | None = None
                   ) -> str:
  """`curves`: {label: best value after trial 1, 2, ... (None before the first
  finished trial)}; `trials`: {label: each trial's own value in the same order (None:
  pruned or failed)}, drawn as faint dots. Writes the PNG at `path` and returns it."""
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  percent = metric.endswith("accuracy")
  for i, (label, curve) in enumerate(curves.items()):
    colour = f"C{i}"
    own = [(j + 1, v) for j, v in enumerate((trials or {}).get(label, [])) if v is not None]
    if own:
      ax.plot(*zip(*own), "o", color=colour, alpha=0.35, markersize=5,
              markeredgewidth=0)
    points = [(j + 1, v) for j, v in enumerate(curve) if v is not None]
    if not points:
      continue
    xs, ys = zip(*points)
    ax.step(xs, ys, where="post", marker="o", markersize=4, color=colour,
            label=f"{label} (best so far)" if own else label)
  ax.set_xlabel("trials spent")
  ax.set_ylabel(f"best {metric}")
  ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  if percent:
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda t, _=None: f"{100 * t:.3g}%"))
  ax.grid(True, alpha=0.3)
  if len(curves) > 1 or trials:
    ax.legend(fontsize="small")
  ax.set_title(title or f"best {metric} against trials spent")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
