"""How robust is the classifier? Accuracy against the attack's epsilon, as a PNG and as
a text table.

- robustness.png: one line per attack (FGSM, PGD), accuracy (%) against epsilon, from
  the clean accuracy of the same examples at epsilon 0; each point is labelled with its
  value, so the number at the epsilon a paper quotes (MNIST: 0.3) is read off directly.
  A stronger attack lies lower: PGD below FGSM.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

_COLOURS = {"fgsm": "tab:orange", "pgd": "tab:red"}
_LABELS = {"fgsm": "FGSM", "pgd": "PGD"}
_STYLES = {"fgsm": dict(linestyle="--", marker="s"), "pgd": dict(linestyle="-", marker="o")}

Curves = dict[str, list[tuple[float, float]]]     # method -> [(epsilon, accuracy)]


def robust_accuracy(curves: Curves, path: str, title: str = "", subtitle: str = "") -> None:
  """Accuracy (a fraction) against epsilon, one line per attack, written as a PNG."""
  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  epsilons = sorted({eps for points in curves.values() for eps, _ in points})
  top = {}                                   # epsilon -> the highest accuracy there
  for points in curves.values():
    for eps, acc in points:
      top[eps] = max(top.get(eps, acc), acc)
  for method, points in curves.items():
    points = sorted(points)
    xs, ys = [p[0] for p in points], [100.0 * p[1] for p in points]
    style = _STYLES.get(method, dict(linestyle="-", marker="o"))
    ax.plot(xs, ys, color=_COLOURS.get(method), label=_LABELS.get(method, method), **style)
    for (x, acc), y in zip(points, ys):
      if x > 0:      # the highest value at an epsilon is labelled above, the others below
        ax.annotate(f"{y:.1f}%", (x, y), textcoords="offset points",
                    xytext=(5, 5) if acc >= top[x] else (5, -12), fontsize=8,
                    color=_COLOURS.get(method))
  if curves and epsilons and epsilons[0] == 0.0:
    clean = 100.0 * top[0.0]
    ax.annotate(f"clean {clean:.1f}%", (0.0, clean), textcoords="offset points",
                xytext=(6, 5), fontsize=8)
  ax.set_xticks(epsilons, [f"{e:g}" for e in epsilons])
  ax.set_ylim(-8, 108)
  ax.yaxis.set_major_locator(ticker.MultipleLocator(20))
  ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda t, _: f"{t:g}%"))
  ax.set_xlabel("epsilon (L-infinity radius, pixels in [0, 1])")
  ax.set_ylabel("accuracy under attack")
  ax.grid(alpha=0.3)
  ax.legend(loc="best", fontsize=9)
  if title or subtitle:
    ax.set_title(title + ("\n" if title and subtitle else "") + subtitle, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def format_table(curves: Curves, heading: str = "") -> str:
  """The curves as a table: a row per attack, a column per epsilon (accuracy in %)."""
  epsilons = sorted({eps for points in curves.values() for eps, _ in points})
  width = max([len("epsilon")] + [len(_LABELS.get(m, m)) for m in curves])
  lines = [heading] if heading else []
  lines.append(f"{'epsilon':<{width}}" + "".join(f"{e:>9g}" for e in epsilons))
  for method, points in curves.items():
    values = dict(points)
    lines.append(f"{_LABELS.get(method, method):<{width}}" + "".join(
        f"{100 * values[e]:>8.2f}%" if e in values else f"{'-':>9}" for e in epsilons))
  return "\n".join(lines) + "\n"
