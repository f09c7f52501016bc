"""practice_jax against scikit-learn's own models on the real small data sets its wheel
ships, on the same train/test rows (practice_jax/data/sklearn_sets.py writes them).

    python -m practice_jax.data.sklearn_sets --out=data/sklearn
    python bench/sklearn_baselines.py --data=data/sklearn --seeds=0,1,2

For each data set: scikit-learn's LogisticRegression / MLPClassifier (or LinearRegression
/ MLPRegressor for diabetes) on standardised features, fitted on train.csv (digits: the
train/ images flattened, pixels / 255), and practice_jax's config (configs/<name>.py) run
as a user runs it, one process per seed. Reported: test accuracy (R² for diabetes) and
wall time, the median over seeds (scikit-learn's MLP takes the same seeds), as a markdown
table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSIFICATION = ("digits", "breast_cancer", "wine")
ALL = CLASSIFICATION + ("diabetes",)


def _table(path: str) -> tuple[np.ndarray, np.ndarray]:
  import csv
  with open(path) as f:
    rows = list(csv.reader(f))[1:]
  x = np.asarray([[float(v) for v in r[:-1]] for r in rows])
  y = np.asarray([r[-1] for r in rows])
  return x, y


def _folder(path: str) -> tuple[np.ndarray, np.ndarray]:
  from PIL import Image
  xs, ys = [], []
  for label in sorted(os.listdir(path)):
    for name in sorted(os.listdir(os.path.join(path, label))):
      xs.append(np.asarray(Image.open(os.path.join(path, label, name)), np.float64).ravel() / 255)
      ys.append(label)
  return np.asarray(xs), np.asarray(ys)


def load(data: str, name: str):
  if name == "digits":
    return (*_folder(os.path.join(data, name, "train")),
            *_folder(os.path.join(data, name, "test")))
  return (*_table(os.path.join(data, name, "train.csv")),
          *_table(os.path.join(data, name, "test.csv")))


def sklearn_runs(data: str, name: str, seeds: list[int]) -> dict[str, tuple[float, float]]:
  """{model: (median score, median seconds)}."""
  from sklearn.linear_model import LinearRegression, LogisticRegression
  from sklearn.neural_network import MLPClassifier, MLPRegressor
  from sklearn.pipeline import make_pipeline
  from sklearn.preprocessing import StandardScaler
  x, y, xt, yt = load(data, name)
  if name == "diabetes":
    y, yt = y.astype(float), yt.astype(float)
    models = {"LinearRegression": lambda s: LinearRegression(),
              "MLPRegressor(64)": lambda s: MLPRegressor(hidden_layer_sizes=(64,), max_iter=5000, random_state=s)}
  else:
    models = {"LogisticRegression": lambda s: LogisticRegression(max_iter=5000),
              "MLPClassifier(64)": lambda s: MLPClassifier(hidden_layer_sizes=(64,), max_iter=2000, random_state=s)}
  out = {}
  for label, make in models.items():
    scores, times = [], []
    for seed in seeds:
      start = time.perf_counter()
      model = make_pipeline(StandardScaler(), make(seed)).fit(x, y)
      score = model.score(xt, yt)      # accuracy, or R² for regression
      times.append(time.perf_counter() - start)
      scores.append(score)
    out[label] = (statistics.median(scores), statistics.median(times))
  return out


def practice_jax_runs(data: str, name: str, seeds: list[int], workdir: str
                      ) -> tuple[float, float]:
  """(median score, median wall seconds from process start) of configs/<name>.py."""
  scores, times = [], []
  for seed in seeds:
    run = os.path.join(workdir, f"{name}_{seed}")
    path = os.path.join(data, name)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "practice_jax.main", f"--config=configs/{name}.py:{path}",
                    f"--workdir={run}", f"--config.seed={seed}"],
                   cwd=REPO, check=True, capture_output=True, text=True)
    times.append(time.perf_counter() - start)
    with open(os.path.join(run, "run.json")) as f:
      test = json.load(f)["final"]["test"]
    scores.append(test["r2"] if name == "diabetes" else test["accuracy"])
  return statistics.median(scores), statistics.median(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data", default="data/sklearn")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--sets", default=",".join(ALL))
  args = parser.parse_args()
  seeds = [int(s) for s in args.seeds.split(",")]
  print("| data set | metric | practice_jax (config) | scikit-learn |")
  print("|---|---|---|---|")
  with tempfile.TemporaryDirectory() as workdir:
    for name in args.sets.split(","):
      metric = "R²" if name == "diabetes" else "accuracy"
      fmt = (lambda v: f"{v:.3f}") if name == "diabetes" else (lambda v: f"{v:.2%}")
      score, seconds = practice_jax_runs(args.data, name, seeds, workdir)
      baselines = sklearn_runs(args.data, name, seeds)
      theirs = "; ".join(f"{k} {fmt(s)} ({t:.2f} s)" for k, (s, t) in baselines.items())
      print(f"| {name} | test {metric} | {fmt(score)} ({seconds:.0f} s, configs/{name}.py) "
            f"| {theirs} |", flush=True)


if __name__ == "__main__":
  main()
