"""Real data that needs no network: the small data sets scikit-learn's wheel ships,
written as an image folder and CSV files, so practice_jax trains on them exactly as on
your own data (data/folders.py, data/tables.py).

    pip install -e '.[tables]'       # scikit-learn
    python -m practice_jax.data.sklearn_sets --out=data/sklearn

writes

    data/sklearn/digits/{train,test}/<digit>/<n>.png   1,797 8x8 grey digits (0-16 -> 0-255)
    data/sklearn/breast_cancer/{train,test}.csv       569 rows, 30 numeric features, label
                                                     malignant / benign
    data/sklearn/wine/{train,test}.csv                178 rows, 13 features, 3 cultivars
    data/sklearn/diabetes/{train,test}.csv            442 rows, 10 features, a numeric
                                                     target (progression after a year)

Test is 20% of the examples (per class for the classification sets), chosen by the
seeded split of data/splits.py with split_seed 0; the configs configs/digits.py,
breast_cancer.py, wine.py and diabetes.py read these files, and
bench/sklearn_baselines.py trains scikit-learn's own models on the same splits.
"""

from __future__ import annotations

import csv
import os
import sys

import numpy as np
from absl import app, flags

from practice_jax.data import splits

_OUT = flags.DEFINE_string("out", "data/sklearn", "Folder to write the data sets to.")
TEST_FRACTION, SPLIT_SEED = 0.2, 0


def _split(labels: np.ndarray | None, n: int) -> dict[str, np.ndarray]:
  idx = splits.seeded_split(labels, n, 0.0, TEST_FRACTION, SPLIT_SEED)
  return {"train": idx["train"], "test": idx["test"]}


def write_digits(out: str) -> int:
  from PIL import Image
  from sklearn.datasets import load_digits
  d = load_digits()
  images = np.clip(np.rint(d.images * 255.0 / 16.0), 0, 255).astype(np.uint8)
  for split, idx in _split(d.target, len(d.target)).items():
    for i in idx:
      folder = os.path.join(out, "digits", split, str(d.target[i]))
      os.makedirs(folder, exist_ok=True)
      Image.fromarray(images[i]).save(os.path.join(folder, f"{i:04d}.png"))
  return len(d.target)


def _write_table(out: str, name: str, columns: list[str], x: np.ndarray, y: list[str],
                 stratify: bool) -> int:
  labels = np.asarray(y) if stratify else None
  os.makedirs(os.path.join(out, name), exist_ok=True)
  for split, idx in _split(labels, len(y)).items():
    with open(os.path.join(out, name, f"{split}.csv"), "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(columns + ["label"])
      writer.writerows([*(f"{v:.10g}" for v in x[i]), y[i]] for i in idx)
  return len(y)


def write_tables(out: str) -> dict[str, int]:
  from sklearn import datasets
  written = {}
  for name, loader in (("breast_cancer", datasets.load_breast_cancer),
                       ("wine", datasets.load_wine)):
    d = loader()
    names = [str(d.target_names[t]) for t in d.target]
    columns = [c.replace(" ", "_") for c in d.feature_names]
    written[name] = _write_table(out, name, columns, d.data, names, stratify=True)
  d = datasets.load_diabetes(scaled=False)
  written["diabetes"] = _write_table(out, "diabetes", list(d.feature_names), d.data,
                                     [f"{t:g}" for t in d.target], stratify=False)
  return written


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    print(f"error: unexpected arguments {' '.join(argv[1:])}; only --out=FOLDER.",
          file=sys.stderr)
    return 2
  try:
    import sklearn  # noqa: F401
  except ImportError:
    print("error: scikit-learn is not installed; run pip install -e '.[tables]'.",
          file=sys.stderr)
    return 2
  out = _OUT.value
  n = write_digits(out)
  print(f"{os.path.join(out, 'digits')}: {n} images in train/ and test/ class folders")
  for name, rows in write_tables(out).items():
    print(f"{os.path.join(out, name)}: {rows} rows in train.csv and test.csv")
  return 0


if __name__ == "__main__":
  app.run(main)
