"""Pre-trained versus from scratch, at 100, 1,000 and all labels (issue #17).

    TFDS_DATA_DIR=/tmp/tfds_main python bench/transfer_labels.py [--out runs/transfer_labels]
        [--labels 100,1000,0] [--methods finetune,probe,scratch] [--seed 0]
        [--directions fashion_mnist_from_mnist,mnist_from_fashion_mnist]

Needs the two pre-trained runs named in configs/fashion_mnist_from_mnist.py and
configs/mnist_from_fashion_mnist.py (runs/mnist_cnn_pretrain, runs/fashion_mnist_cnn_pretrain;
their commands are in those files). For every direction, label count and method, one
fresh process `python -m practice_jax.main --config=configs/<direction>.py
--workdir=<out>/<direction>/<labels>_<method> ...`:

- finetune: every parameter from the pre-trained run, all trained (AdamW lr 1e-3);
- probe: a linear probe: every parameter from the pre-trained run, all but the head
  Dense_1 frozen, batch-norm statistics too (lr 1e-2);
- scratch: the same model and data from a fresh initialisation (lr 3e-3, the value of
  configs/fashion_mnist_cnn.py).

Budgets (few labels: many epochs over the few examples, in a fixed number of steps):
100 labels: batch 50, 200 steps (100 epochs); 1,000 labels: batch 100, 300 steps (30
epochs); all (55,000): batch 128, --all_epochs epochs (default 1). Warmup-cosine
schedule, crop augmentation (2 px), no flips, the last checkpoint evaluated on the test
set. The subset of N labels is data.train_examples=N: the first N of a seeded
class-balanced order, the same for every method. A cell whose run.json exists is not run
again. Writes <out>/results.json, <out>/results.md (the table) and
<out>/accuracy_vs_labels.png. Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUDGETS = {100: dict(batch_size=50, num_steps=200, eval_every_steps=100),
           1000: dict(batch_size=100, num_steps=300, eval_every_steps=150)}
METHODS = {
    "finetune": dict(learning_rate=1e-3),
    "probe": dict(learning_rate=1e-2, freeze="^(?!Dense_1)"),
    "scratch": dict(learning_rate=3e-3, scratch=True),
}


def _flags(labels: int, method: str, seed: int, all_epochs: float) -> list[str]:
  budget = BUDGETS.get(labels, dict(batch_size=128, num_epochs=all_epochs))
  m = METHODS[method]
  flags = [f"--config.data.train_examples={labels}", f"--config.seed={seed}",
           f"--config.optimizer.learning_rate={m['learning_rate']}",
           "--config.plots=False", "--config.evaluate_checkpoint=last"]
  flags += [f"--config.{k}={v}" for k, v in budget.items()]
  if "num_steps" in budget:
    flags.append("--config.schedule.warmup_steps=10")
  if m.get("freeze"):
    flags.append(f"--config.optimizer.freeze={m['freeze']}")
  if m.get("scratch"):
    flags.append("--config.init_from.workdir=")
  return flags


def run_cell(out: Path, direction: str, labels: int, method: str, seed: int,
             all_epochs: float) -> dict:
  workdir = out / direction / f"{labels or 'all'}_{method}_seed{seed}"
  record_path = workdir / "run.json"
  if not record_path.is_file():
    command = [sys.executable, "-m", "practice_jax.main", f"--config=configs/{direction}.py",
               f"--workdir={workdir}", *_flags(labels, method, seed, all_epochs)]
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    log = out / f"{direction}_{labels or 'all'}_{method}_seed{seed}.log"
    with open(log, "w") as f:
      code = subprocess.call(command, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
    if code != 0:
      print(f"  failed (exit {code}); see {log}", flush=True)
      return {}
    process_s = time.perf_counter() - start
  else:
    process_s = None
  record = json.loads(record_path.read_text())
  cell = {"direction": direction, "labels": labels, "method": method, "seed": seed,
          "test_accuracy": record["final"]["test"]["accuracy"],
          "epochs": record["epochs"], "steps": record["steps"],
          "wall_time_s": record["wall_time_s"], "workdir": str(workdir)}
  if process_s is not None:
    cell["process_s"] = round(process_s, 1)
  print(f"  {direction} labels={labels or 'all'} {method}: test accuracy "
        f"{cell['test_accuracy']:.4f}, {cell['epochs']:.1f} epochs, {cell['wall_time_s']:.0f} s",
        flush=True)
  return cell


def table(cells: list[dict]) -> str:
  lines = ["| target (pre-trained on) | labels | method | test accuracy | epochs | steps | "
           "wall time (s) |", "|---|---:|---|---:|---:|---:|---:|"]
  for c in cells:
    target, _, source = c["direction"].partition("_from_")
    lines.append(f"| {target} ({source}) | {c['labels'] or 'all (55,000)'} | {c['method']} | "
                 f"{100 * c['test_accuracy']:.2f}% | {round(c['epochs'], 1):g} | {c['steps']} | "
                 f"{c['wall_time_s']:.0f} |")
  return "\n".join(lines)


def plot(cells: list[dict], path: Path, full: int = 55000) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  directions = sorted({c["direction"] for c in cells})
  fig, axes = plt.subplots(1, len(directions), figsize=(5.5 * len(directions), 4.2),
                           squeeze=False)
  styles = {"finetune": ("tab:blue", "o"), "probe": ("tab:green", "s"),
            "scratch": ("tab:red", "^")}
  for ax, direction in zip(axes[0], directions):
    for method, (colour, marker) in styles.items():
      points = sorted((c["labels"] or full, c["test_accuracy"]) for c in cells
                      if c["direction"] == direction and c["method"] == method)
      if points:
        ax.plot(*zip(*points), marker=marker, color=colour, label=method)
    target, _, source = direction.partition("_from_")
    ax.set_xscale("log")
    ax.set_xlabel("training labels")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{target} (pre-trained on {source})")
    ax.grid(True, alpha=0.3)
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="runs/transfer_labels")
  parser.add_argument("--labels", default="100,1000,0")
  parser.add_argument("--methods", default="finetune,probe,scratch")
  parser.add_argument("--directions",
                      default="fashion_mnist_from_mnist,mnist_from_fashion_mnist")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--all_epochs", type=float, default=1.0)
  args = parser.parse_args()
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  cells = []
  for labels in (int(n) for n in args.labels.split(",")):
    for direction in args.directions.split(","):
      for method in args.methods.split(","):
        cell = run_cell(out, direction, labels, method, args.seed, args.all_epochs)
        if cell:
          cells.append(cell)
          (out / "results.json").write_text(json.dumps(cells, indent=2))
          (out / "results.md").write_text(table(cells) + "\n")
          plot(cells, out / "accuracy_vs_labels.png")
  print(table(cells))
  print(f"Wrote {out / 'results.md'} and {out / 'accuracy_vs_labels.png'}.")


if __name__ == "__main__":
  os.environ.setdefault("TFDS_DATA_DIR", "/tmp/tfds_main")
  main()
