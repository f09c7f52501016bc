"""Pre-trained versus from scratch, at 100, 1,000 and all labels, over seeds (issue #17).

    TFDS_DATA_DIR=/tmp/tfds_main python bench/transfer_labels.py [--out runs/transfer_labels]
        [--labels 100,1000,0] [--methods finetune,probe,scratch] [--seeds 0,1,2]
        [--directions fashion_mnist_from_mnist,mnist_from_fashion_mnist,mnist_from_denoising_ae]
        [--all_epochs 1.0] [--all_seeds]

Needs the pre-trained runs named in configs/fashion_mnist_from_mnist.py,
configs/mnist_from_fashion_mnist.py and configs/mnist_from_denoising_ae.py
(runs/mnist_cnn_pretrain, runs/fashion_mnist_cnn_pretrain, runs/mnist_denoising_ae; their
commands are in those files). For every direction, label count, method and seed, one fresh
process `python -m practice_jax.main --config=configs/<direction>.py
--workdir=<out>/<direction>/<labels>_<method>_seed<seed> ...`:

- finetune: the pre-trained parameters (all of them for the two CNN directions; only the
  encoder's Conv_0 and Conv_1 for mnist_from_denoising_ae, whose dense layers start fresh),
  everything trained (AdamW lr 1e-3);
- probe: the same start with the pre-trained part frozen, batch-norm statistics too (lr
  1e-2): a linear probe (all but the head Dense_1 frozen) for the CNN directions; for the
  autoencoder, whose encoder has no head, the encoder frozen and the two fresh dense layers
  (dense256 - dense10) trained on its features;
- scratch: the same model and data from a fresh initialisation (lr 3e-3, the value of
  configs/fashion_mnist_cnn.py).

Budgets (few labels: many epochs over the few examples, in a fixed number of steps):
100 labels: batch 50, 200 steps (100 epochs); 1,000 labels: batch 100, 300 steps (30
epochs); all (55,000): batch 128, --all_epochs epochs (default 1). Warmup-cosine
schedule, crop augmentation (2 px), no flips, the last checkpoint evaluated on the test
set. The subset of N labels is data.train_examples=N: the first N of a class-balanced
order fixed by the data alone, the same for every method and seed, so the seeds vary the
fresh initialisation, the batch order, dropout and the crops, not which examples are
labelled. The all-label cells run the first seed only, unless --all_seeds. A cell whose
run.json exists is not run again.

Writes <out>/results.json (one entry per run, every run found under <out>),
<out>/results.md (median and range over seeds per cell, then every run) and
<out>/accuracy_vs_labels.png (median, the range as error bars, every seed as a dot).
Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DIRECTIONS = ("fashion_mnist_from_mnist", "mnist_from_fashion_mnist", "mnist_from_denoising_ae")
BUDGETS = {100: dict(batch_size=50, num_steps=200, eval_every_steps=100),
           1000: dict(batch_size=100, num_steps=300, eval_every_steps=150)}
METHODS = {
    "finetune": dict(learning_rate=1e-3),
    "probe": dict(learning_rate=1e-2, freeze="^(?!Dense_1)"),
    "scratch": dict(learning_rate=3e-3, scratch=True),
}
# What the probe freezes where it is not "all but the head": the autoencoder's encoder.
PROBE_FREEZE = {"mnist_from_denoising_ae": "^Conv_"}
FULL = 55000
TITLES = {"fashion_mnist_from_mnist": "Fashion-MNIST, pre-trained on MNIST",
          "mnist_from_fashion_mnist": "MNIST, pre-trained on Fashion-MNIST",
          "mnist_from_denoising_ae": "MNIST, encoder of a denoising AE\n(pre-trained on MNIST "
                                     "images, no labels)"}
CELL = re.compile(r"^(?P<labels>\d+|all)_(?P<method>[a-z]+)_seed(?P<seed>\d+)$")


def _flags(direction: str, labels: int, method: str, seed: int,
           all_epochs: float) -> list[str]:
  budget = BUDGETS.get(labels, dict(batch_size=128, num_epochs=all_epochs))
  m = METHODS[method]
  flags = [f"--config.data.train_examples={labels}", f"--config.seed={seed}",
           f"--config.optimizer.learning_rate={m['learning_rate']}",
           "--config.plots=False", "--config.evaluate_checkpoint=last"]
  flags += [f"--config.{k}={v}" for k, v in budget.items()]
  if "num_steps" in budget:
    flags.append("--config.schedule.warmup_steps=10")
  if m.get("freeze"):
    flags.append(f"--config.optimizer.freeze={PROBE_FREEZE.get(direction, m['freeze'])}")
  if m.get("scratch"):
    flags.append("--config.init_from.workdir=")
  return flags


def _workdir(out: Path, direction: str, labels: int, method: str, seed: int) -> Path:
  return out / direction / f"{labels or 'all'}_{method}_seed{seed}"


def run_cell(out: Path, direction: str, labels: int, method: str, seed: int,
             all_epochs: float) -> bool:
  """Runs one cell unless its run.json exists; False if the run failed."""
  workdir = _workdir(out, direction, labels, method, seed)
  if (workdir / "run.json").is_file():
    return True
  command = [sys.executable, "-m", "practice_jax.main", f"--config=configs/{direction}.py",
             f"--workdir={workdir}", *_flags(direction, labels, method, seed, all_epochs)]
  print("$", " ".join(command), flush=True)
  start = time.perf_counter()
  log = out / f"{direction}_{labels or 'all'}_{method}_seed{seed}.log"
  with open(log, "w") as f:
    code = subprocess.call(command, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
  if code != 0:
    print(f"  failed (exit {code}); see {log}", flush=True)
    return False
  record = json.loads((workdir / "run.json").read_text())
  print(f"  {direction} labels={labels or 'all'} {method} seed {seed}: test accuracy "
        f"{record['final']['test']['accuracy']:.4f}, {record['epochs']:.1f} epochs, "
        f"{record['wall_time_s']:.0f} s (process {time.perf_counter() - start:.0f} s)",
        flush=True)
  return True


def collect(out: Path) -> list[dict]:
  """Every finished run under `out` (this invocation's and earlier ones')."""
  cells = []
  for direction in DIRECTIONS:
    for record_path in sorted((out / direction).glob("*/run.json")):
      match = CELL.match(record_path.parent.name)
      if not match:
        continue
      record = json.loads(record_path.read_text())
      labels = 0 if match["labels"] == "all" else int(match["labels"])
      cells.append({"direction": direction, "labels": labels, "method": match["method"],
                    "seed": int(match["seed"]),
                    "test_accuracy": record["final"]["test"]["accuracy"],
                    "epochs": record["epochs"], "steps": record["steps"],
                    "wall_time_s": record["wall_time_s"],
                    "workdir": str(record_path.parent)})
  order = {d: i for i, d in enumerate(DIRECTIONS)}
  methods = {m: i for i, m in enumerate(METHODS)}
  cells.sort(key=lambda c: (c["labels"] or FULL, order[c["direction"]], methods[c["method"]],
                            c["seed"]))
  return cells


def summarise(cells: list[dict]) -> list[dict]:
  """One row per (direction, labels, method): median, min and max over the seeds."""
  groups: dict[tuple, list[dict]] = {}
  for c in cells:
    groups.setdefault((c["direction"], c["labels"], c["method"]), []).append(c)
  rows = []
  for (direction, labels, method), group in groups.items():
    accuracy = [c["test_accuracy"] for c in group]
    rows.append({"direction": direction, "labels": labels, "method": method,
                 "seeds": sorted(c["seed"] for c in group),
                 "median": statistics.median(accuracy), "min": min(accuracy),
                 "max": max(accuracy), "accuracy": accuracy, "epochs": group[0]["epochs"],
                 "steps": group[0]["steps"],
                 "wall_time_s": statistics.median(c["wall_time_s"] for c in group)})
  return rows


def _target(direction: str) -> str:
  target, _, source = direction.partition("_from_")
  return f"{target} ({source.replace('_', ' ') if source == 'denoising_ae' else source})"


def table(cells: list[dict]) -> str:
  lines = ["| target (pre-trained on) | labels | method | test accuracy, median | range "
           "(min-max) | seeds | epochs | steps | wall time (s), median |",
           "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
  for r in summarise(cells):
    spread = (f"{100 * r['min']:.2f}-{100 * r['max']:.2f}" if len(r["seeds"]) > 1
              else "one seed")
    lines.append(f"| {_target(r['direction'])} | {r['labels'] or 'all (55,000)'} | "
                 f"{r['method']} | {100 * r['median']:.2f}% | {spread} | "
                 f"{','.join(map(str, r['seeds']))} | {round(r['epochs'], 1):g} | "
                 f"{r['steps']} | {r['wall_time_s']:.0f} |")
  return "\n".join(lines)


def every_run(cells: list[dict]) -> str:
  lines = ["| target (pre-trained on) | labels | method | seed | test accuracy | "
           "wall time (s) |", "|---|---:|---|---:|---:|---:|"]
  for c in cells:
    lines.append(f"| {_target(c['direction'])} | {c['labels'] or 'all (55,000)'} | "
                 f"{c['method']} | {c['seed']} | {100 * c['test_accuracy']:.2f}% | "
                 f"{c['wall_time_s']:.0f} |")
  return "\n".join(lines)


def plot(cells: list[dict], path: Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  directions = [d for d in DIRECTIONS if any(c["direction"] == d for c in cells)]
  fig, axes = plt.subplots(1, len(directions), figsize=(5.5 * len(directions), 4.4),
                           squeeze=False)
  styles = {"finetune": ("tab:blue", "o", 0.97), "probe": ("tab:green", "s", 1.0),
            "scratch": ("tab:red", "^", 1.03)}     # a small x offset keeps the bars apart
  rows = summarise(cells)
  for ax, direction in zip(axes[0], directions):
    for method, (colour, marker, shift) in styles.items():
      mine = sorted((r for r in rows if r["direction"] == direction and r["method"] == method),
                    key=lambda r: r["labels"] or FULL)
      if not mine:
        continue
      x = [(r["labels"] or FULL) * shift for r in mine]
      median = [r["median"] for r in mine]
      err = [[r["median"] - r["min"] for r in mine], [r["max"] - r["median"] for r in mine]]
      ax.errorbar(x, median, yerr=err, marker=marker, color=colour, capsize=4,
                  label=f"{method} (median, range)")
      for xi, r in zip(x, mine):
        ax.scatter([xi] * len(r["accuracy"]), r["accuracy"], s=10, color=colour, alpha=0.4)
    ax.set_xscale("log")
    ax.set_xlabel("training labels")
    ax.set_ylabel("test accuracy")
    ax.set_title(TITLES[direction], fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
  fig.suptitle("Pre-trained versus from scratch: median over seeds, bars = min-max, "
               "dots = seeds (all labels: one seed)", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write(out: Path) -> list[dict]:
  cells = collect(out)
  if cells:
    (out / "results.json").write_text(json.dumps(cells, indent=2))
    (out / "results.md").write_text(table(cells) + "\n\nEvery run:\n\n" + every_run(cells)
                                     + "\n")
    plot(cells, out / "accuracy_vs_labels.png")
  return cells


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="runs/transfer_labels")
  parser.add_argument("--labels", default="100,1000,0")
  parser.add_argument("--methods", default="finetune,probe,scratch")
  parser.add_argument("--directions", default=",".join(DIRECTIONS))
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--all_seeds", action="store_true",
                      help="run every seed for the all-label cells too (else the first)")
  parser.add_argument("--all_epochs", type=float, default=1.0)
  args = parser.parse_args()
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  seeds = [int(s) for s in args.seeds.split(",")]
  for direction in args.directions.split(","):
    if direction not in DIRECTIONS:
      parser.error(f"--directions: {direction!r} is not one of {', '.join(DIRECTIONS)}")
  for seed_index, seed in enumerate(seeds):
    for labels in (int(n) for n in args.labels.split(",")):
      if not labels and seed_index and not args.all_seeds:
        continue
      for direction in args.directions.split(","):
        for method in args.methods.split(","):
          if run_cell(out, direction, labels, method, seed, args.all_epochs):
            write(out)
  cells = write(out)
  print(table(cells))
  print(f"Wrote {out / 'results.md'} and {out / 'accuracy_vs_labels.png'}.")


if __name__ == "__main__":
  os.environ.setdefault("TFDS_DATA_DIR", "/tmp/tfds_main")
  main()
