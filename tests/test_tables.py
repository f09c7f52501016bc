"""Your own CSV tables: reading, encoding and refusing them; classification (softmax and
sigmoid), regression against the closed-form least-squares solution; predict on rows."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, load_config
from practice_jax import data, train
from practice_jax.data import tables
from practice_jax.errors import UserError
from practice_jax.validation import validate


def write_csv(path, header, rows):
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)
  return str(path)


def iris_like(path, n=120, seed=0, classes=("setosa", "versicolor", "virginica")):
  """Three separable classes from two numeric features and a categorical one."""
  rng = np.random.default_rng(seed)
  rows = []
  for i in range(n):
    c = i % len(classes)
    x1, x2 = rng.normal(2.0 * c, 0.3), rng.normal(-c, 0.3)
    colour = ["red", "green", "blue"][c] if rng.random() < 0.8 else "green"
    rows.append([f"{x1:.3f}", "" if i == 5 else f"{x2:.3f}", colour, classes[c]])
  return write_csv(path, ["length", "width", "colour", "label"], rows)


def table_config(path, name="csv_classification", **data):
  config = load_config(name)
  config.data.path = str(path)
  config.data.update(data)
  config.num_epochs = 3.0
  config.batch_size = 16
  config.eval_batch_size = 32
  config.log_every_steps = 5
  config.steps_per_dispatch = 1
  return config


def test_schema_encodes_numeric_categorical_and_missing_values(tmp_path):
  path = iris_like(tmp_path / "t.csv")
  cfg = data.data_config("csv", path=path, validation_fraction=0.25, test_fraction=0.25)
  schema, parts = tables.load(cfg)
  kinds = {c["name"]: c["kind"] for c in schema["columns"]}
  assert kinds == {"length": "numeric", "width": "numeric", "colour": "categorical"}
  assert schema["columns"][2]["vocabulary"] == ["blue", "green", "red"]
  assert schema["class_names"] == ["setosa", "versicolor", "virginica"]
  assert schema["num_features"] == 5
  assert sum(len(t) for t in parts.values()) == 120
  assert len(parts["test"]) == 30 and len(parts["validation"]) == 30   # per class 10+10
  train_x = tables.encode(schema, parts["train"])
  # Standardised with the training split's statistics: mean 0, std 1 there.
  np.testing.assert_allclose(train_x[:, 0].mean(), 0.0, atol=1e-5)
  np.testing.assert_allclose(train_x[:, 0].std(), 1.0, atol=1e-5)
  one_hot = train_x[:, 2:]
  assert set(one_hot.sum(axis=1)) == {1.0}
  # The split is a function of split_seed only, and stratified.
  again = tables.load(cfg)[1]
  assert [r for r in again["test"].rows] == [r for r in parts["test"].rows]
  assert sorted(tables.labels(schema, parts["test"]).tolist()).count(0) == 10


@pytest.mark.parametrize("rows,settings,expected", [
    ([["1", "a"]], {"label_column": "y"}, "has no label column 'y'"),
    ([["1", "a"], ["x", "b"], ["2", "a"]], {}, "line 3, column 'f': 'x' is not a number"),
    ([["1", "a"], ["2", ""]], {}, "line 3, column 'label': the label is missing"),
    ([["1", "a"], ["2", "a"]], {}, "has 1 class(es)"),
    ([["1", "a"], ["2"]], {}, "line 3 has 1 fields but the header has 2"),
    ([["1", "a"]], {"ignore_columns": ("g",)}, "names column(s) g that"),
])
def test_bad_tables_are_refused_in_one_sentence(tmp_path, rows, settings, expected):
  path = write_csv(tmp_path / "bad.csv", ["f", "label"], rows)
  cfg = data.data_config("csv", path=path, validation_fraction=0.0, test_fraction=0.0,
                         **settings)
  with pytest.raises(UserError, match=None) as e:
    tables.load(cfg)
  assert expected in str(e.value)


def test_classification_round_trips_schema_and_predicts_rows(tmp_path):
  path = iris_like(tmp_path / "train.csv")
  config = table_config(path)
  validate(config, 1)
  workdir = str(tmp_path / "run")
  record = train.train_and_evaluate(config, workdir)
  assert record["final"]["test"]["accuracy"] >= 0.9
  assert os.path.isfile(os.path.join(workdir, "test_confusion_matrix.png"))
  # The schema (vocabularies, statistics, class names) comes back from the checkpoint.
  exp, state, _, _ = train.load_trained(workdir)
  assert exp.source.info["columns"][2]["vocabulary"] == ["blue", "green", "red"]
  assert exp.task.class_names == ["setosa", "versicolor", "virginica"]

  rows = write_csv(tmp_path / "rows.csv", ["length", "width", "colour"],
                   [["0.0", "0.0", "red"], ["4.0", "-2.0", ""]])
  out = tmp_path / "predictions.csv"
  result = _predict(workdir, rows, f"--output={out}")
  assert result.returncode == 0, result.stderr
  with open(out) as f:
    written = list(csv.DictReader(f))
  assert [r["prediction"] for r in written] == ["setosa", "virginica"]
  assert float(written[0]["p(setosa)"]) > 0.5
  assert written[1]["colour"] == ""

  unseen = write_csv(tmp_path / "unseen.csv", ["length", "width", "colour"],
                     [["0.0", "0.0", "red"], ["1.0", "1.0", "purple"]])
  result = _predict(workdir, unseen)
  assert result.returncode == 2
  assert ("line 3, column 'colour': the category 'purple' was not seen in training"
          in result.stderr.strip().splitlines()[-1])


def _predict(workdir, *args):
  return subprocess.run([sys.executable, "-m", "practice_jax.predict", f"--workdir={workdir}",
                         *map(str, args)], cwd=REPO, capture_output=True, text=True,
                        timeout=120)


def test_binary_classification_uses_one_output_and_sigmoid(tmp_path):
  rng = np.random.default_rng(1)
  x = rng.normal(size=(200, 3))
  y = (x @ [1.0, -2.0, 0.5] > 0).astype(int)
  path = write_csv(tmp_path / "b.csv", ["a", "b", "c", "label"],
                   [[*map(str, r), str(t)] for r, t in zip(x, y)])
  config = table_config(path)
  config.model.hidden = ()
  config.optimizer.learning_rate = 0.1
  config.num_epochs = 10.0
  record = train.train_and_evaluate(config, str(tmp_path / "run"))
  exp, state, _, _ = train.load_trained(str(tmp_path / "run"))
  assert exp.task.binary
  assert state.params["Dense_0"]["kernel"].shape == (3, 1)
  assert record["final"]["test"]["accuracy"] >= 0.9


def test_linear_regression_matches_least_squares(tmp_path):
  rng = np.random.default_rng(2)
  x = rng.normal([1.0, -3.0, 10.0], [1.0, 2.0, 5.0], size=(256, 3))
  y = x @ [2.0, -1.0, 0.3] + 7.0 + rng.normal(0, 0.5, 256)
  path = write_csv(tmp_path / "r.csv", ["a", "b", "c", "price"],
                   [[*map(str, r), str(t)] for r, t in zip(x, y)])
  config = table_config(path, "csv_regression", label_column="price", validation_fraction=0.0,
                        test_fraction=0.0)
  config.batch_size = 256                 # full-batch gradient descent
  config.num_epochs = 400.0
  config.log_every_steps = 100
  config.optimizer.learning_rate = 0.05
  validate(config, 1)
  record = train.train_and_evaluate(config, str(tmp_path / "run"))
  exp, state, _, _ = train.load_trained(str(tmp_path / "run"))
  features = tables.encode(exp.source.info, tables.Table(path))
  ours = np.asarray(exp.task.predictions(state, features))
  design = np.concatenate([x, np.ones((256, 1))], axis=1)
  coef = np.linalg.lstsq(design, y, rcond=None)[0]
  best = design @ coef
  np.testing.assert_allclose(ours, best, atol=2e-3 * np.abs(y).max())
  assert record["final"] == {}            # no validation or test rows to evaluate
  assert exp.task.summarize({"se_sum": np.sum((ours - y) ** 2), "ae_sum": 0.0, "y_sum": y.sum(),
                             "y2_sum": np.sum(y * y), "count": 256.0})["r2"] > 0.95


def test_regression_needs_a_numeric_target_and_a_vector_model(tmp_path):
  path = iris_like(tmp_path / "t.csv")
  config = table_config(path, "csv_regression")
  config.data.target = "class"
  with pytest.raises(UserError, match="regression needs a numeric label"):
    validate(config, 1)
  config = table_config(path)
  config.model = load_config("mnist").model
  with pytest.raises(UserError, match="takes images; a table's rows are vectors"):
    validate(config, 1)
