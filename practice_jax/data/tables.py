"""The user's own CSV tables: ``config.data.name='csv'`` with ``config.data.path=FILE``.

The first line names the columns. One column is the label (``label_column``, default
``label``): class names for classification (``target='class'``), a number for regression
(``target='number'``). Every other column is a feature, unless listed in
``ignore_columns``:

- **numeric** if listed in ``numeric_columns``, or (unless listed in
  ``categorical_columns``) when more than half of its non-missing values are numbers; a
  value that is not a number in a numeric column is an error naming its line and column.
  Standardised with the mean and standard deviation of the training split only.
- **categorical** otherwise: one-hot over its vocabulary (the sorted values seen in the
  file(s) at training time), stored with every checkpoint; a value outside it at
  prediction time is an error naming its line and column.

Missing values (an empty field, ``NA``, ``N/A``, ``NaN``, ``null``, ``None`` or ``?``):
a numeric feature takes the training split's mean (0 after standardisation), a
categorical one has no category (all zeros). A missing label is an error.

Splits: ``validation_path`` and ``test_path`` if given, otherwise the seeded split of
data/splits.py (stratified by class for classification). The encoded table is small
and lives on the devices (an ``ArraySource``); ``predict`` encodes new rows with the
stored schema (``encode``).
"""

from __future__ import annotations

import csv
import os

import ml_collections
import numpy as np

from practice_jax.data import splits
from practice_jax.data.base import Entry
from practice_jax.data.in_memory import ArraySource
from practice_jax.errors import UserError

MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})
TARGETS = ("class", "number")


def _config(name: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = name
  c.path = ml_collections.config_dict.placeholder(str)       # the training CSV (required)
  c.validation_path = ml_collections.config_dict.placeholder(str)
  c.test_path = ml_collections.config_dict.placeholder(str)
  c.label_column = "label"
  c.target = "class"                  # 'class' (classification) or 'number' (regression)
  c.numeric_columns = ()              # force these columns numeric
  c.categorical_columns = ()          # force these columns categorical
  c.ignore_columns = ()               # not features (an id, a free-text note)
  # Without validation_path/test_path: the seeded split of data/splits.py.
  c.validation_fraction = 0.1
  c.test_fraction = 0.1
  c.split_seed = 0
  return c


def _check(cfg: ml_collections.ConfigDict) -> str | None:
  if not cfg.path:
    return "config.data.path is not set; give the CSV file to train on (--config.data.path=FILE)."
  for key in ("path", "validation_path", "test_path"):
    if cfg[key] and not os.path.isfile(cfg[key]):
      return f"config.data.{key}={cfg[key]} is not a file; give the path of a CSV file."
  if cfg.target not in TARGETS:
    return f"config.data.target={cfg.target!r} must be 'class' or 'number'."
  both = set(cfg.numeric_columns) & set(cfg.categorical_columns)
  if both:
    return (f"Column(s) {', '.join(sorted(both))} are listed both in numeric_columns and "
            f"categorical_columns; keep each in one.")
  return splits.check_fractions(cfg)


# -- reading ----------------------------------------------------------------------------

def read_csv(path: str) -> tuple[list[str], list[list[str]], list[int]]:
  """(header, rows, the file's line number of each row) of a CSV file, fields stripped and
  blank lines skipped; a UserError for a file that is not a table."""
  rows, lines = [], []
  try:
    with open(path, newline="", encoding="utf-8-sig") as f:
      reader = csv.reader(f)
      header = [field.strip() for field in next(reader, [])]
      for row in reader:
        if any(field.strip() for field in row):
          rows.append([field.strip() for field in row])
          lines.append(reader.line_num)
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise UserError(f"{path} could not be read as a CSV file ({e}).") from None
  if not any(header):
    raise UserError(f"{path} is empty; a CSV file starts with a line of column names.")
  duplicates = sorted({h for h in header if header.count(h) > 1})
  if duplicates:
    raise UserError(f"{path} names column(s) {', '.join(duplicates)} more than once; give "
                    f"every column its own name.")
  for row, line in zip(rows, lines):
    if len(row) != len(header):
      raise UserError(f"{path} line {line} has {len(row)} fields but the header has "
                      f"{len(header)}; fix that line.")
  return header, rows, lines


def _is_missing(value: str) -> bool:
  return value.lower() in MISSING


def _number(value: str) -> float | None:
  try:
    x = float(value)
  except ValueError:
    return None
  return x if np.isfinite(x) else None


class Table:
  """A CSV file's columns by name, with the file's line number of each row."""

  def __init__(self, path: str):
    self.path = path
    self.header, self.rows, self.lines = read_csv(path)
    self.index = {name: i for i, name in enumerate(self.header)}

  def __len__(self) -> int:
    return len(self.rows)

  def column(self, name: str) -> list[str]:
    i = self.index[name]
    return [row[i] for row in self.rows]

  def take(self, idx: np.ndarray) -> "Table":
    out = object.__new__(Table)
    out.path, out.header, out.index = self.path, self.header, self.index
    out.rows = [self.rows[i] for i in idx]
    out.lines = [self.lines[i] for i in idx]
    return out


# -- the schema: which columns, how each is encoded ---------------------------------------

def _sort_names(values: set[str]) -> list[str]:
  """Class or category names, numerically when they all are numbers."""
  if all(_number(v) is not None for v in values):
    return sorted(values, key=lambda v: (float(v), v))
  return sorted(values)


def infer_schema(cfg, tables: list[Table]) -> dict:
  """The schema of the training table (and the vocabularies of every given table)."""
  train = tables[0]
  if cfg.label_column not in train.index:
    raise UserError(f"{train.path} has no label column {cfg.label_column!r} (its columns are "
                    f"{', '.join(train.header)}); set config.data.label_column.")
  for key in ("numeric_columns", "categorical_columns", "ignore_columns"):
    unknown = [c for c in cfg[key] if c not in train.index]
    if unknown:
      raise UserError(f"config.data.{key} names column(s) {', '.join(unknown)} that "
                      f"{train.path} does not have; its columns are {', '.join(train.header)}.")
  for table in tables[1:]:
    if table.header != train.header:
      raise UserError(f"{table.path} has the columns {', '.join(table.header)} but "
                      f"{train.path} has {', '.join(train.header)}; give them the same.")
  columns = []
  for name in train.header:
    if name == cfg.label_column or name in cfg.ignore_columns:
      continue
    values = [v for t in tables for v in t.column(name) if not _is_missing(v)]
    if not values:
      raise UserError(f"Column {name!r} of {train.path} has no values; fill it or add it "
                      f"to config.data.ignore_columns.")
    numbers = sum(_number(v) is not None for v in values)
    numeric = name in cfg.numeric_columns or (
        name not in cfg.categorical_columns and numbers > len(values) / 2)
    if numeric:
      columns.append({"name": name, "kind": "numeric"})
    else:
      columns.append({"name": name, "kind": "categorical",
                      "vocabulary": _sort_names(set(values))})
  schema = {"label_column": cfg.label_column, "target": cfg.target, "columns": columns}
  for table in tables:
    for value, line in zip(table.column(cfg.label_column), table.lines):
      if _is_missing(value):
        raise UserError(f"{table.path} line {line}, column {cfg.label_column!r}: the label "
                        f"is missing; fill it or remove the row.")
  labels = [v for t in tables for v in t.column(cfg.label_column)]
  if cfg.target == "class":
    schema["class_names"] = _sort_names(set(labels))
    schema["num_classes"] = len(schema["class_names"])
    if schema["num_classes"] < 2:
      raise UserError(f"The label column {cfg.label_column!r} of {train.path} has "
                      f"{schema['num_classes']} class(es); classification needs at least 2.")
  return schema


def _numeric_values(table: Table, name: str) -> np.ndarray:
  """The column as float64, NaN where missing; a UserError at the first non-number."""
  out = np.full(len(table), np.nan)
  for i, value in enumerate(table.column(name)):
    if _is_missing(value):
      continue
    x = _number(value)
    if x is None:
      raise UserError(f"{table.path} line {table.lines[i]}, column {name!r}: {value!r} is "
                      f"not a number, but the column is numeric; fix the value, leave it "
                      f"empty (missing), or list the column in config.data.categorical_columns.")
    out[i] = x
  return out


def fit_statistics(schema: dict, train: Table) -> dict:
  """Adds each numeric column's training mean and standard deviation (and the numeric
  target's) to the schema."""
  for col in schema["columns"]:
    if col["kind"] == "numeric":
      x = _numeric_values(train, col["name"])
      x = x[~np.isnan(x)]
      mean = float(x.mean()) if len(x) else 0.0
      std = float(x.std()) if len(x) else 1.0
      col["mean"], col["std"] = mean, std if std > 0 else 1.0
  if schema["target"] == "number":
    y = labels(schema, train)
    schema["label_mean"], schema["label_std"] = float(y.mean()), float(y.std() or 1.0)
  schema["num_features"] = sum(1 if c["kind"] == "numeric" else len(c["vocabulary"])
                               for c in schema["columns"])
  return schema


def encode(schema: dict, table: Table) -> np.ndarray:
  """The table's features as float32 [rows, num_features] under `schema`."""
  missing = [c["name"] for c in schema["columns"] if c["name"] not in table.index]
  if missing:
    raise UserError(f"{table.path} lacks the column(s) {', '.join(missing)} that the model "
                    f"was trained with.")
  parts = []
  for col in schema["columns"]:
    if col["kind"] == "numeric":
      x = _numeric_values(table, col["name"])
      x = np.where(np.isnan(x), col["mean"], x)
      parts.append(((x - col["mean"]) / col["std"])[:, None])
    else:
      index = {v: i for i, v in enumerate(col["vocabulary"])}
      onehot = np.zeros((len(table), len(index)))
      for i, value in enumerate(table.column(col["name"])):
        if _is_missing(value):
          continue
        if value not in index:
          raise UserError(f"{table.path} line {table.lines[i]}, column {col['name']!r}: "
                          f"the category {value!r} was not seen in training (known: "
                          f"{', '.join(col['vocabulary'][:10])}"
                          f"{', ...' if len(index) > 10 else ''}); use a known one or leave "
                          f"it empty.")
        onehot[i, index[value]] = 1.0
      parts.append(onehot)
  if not parts:
    return np.zeros((len(table), 0), np.float32)
  return np.concatenate(parts, axis=1).astype(np.float32)


def labels(schema: dict, table: Table) -> np.ndarray:
  """The label column: class indices (int32) or numbers (float32)."""
  name = schema["label_column"]
  values = table.column(name)
  if schema["target"] == "class":
    index = {v: i for i, v in enumerate(schema["class_names"])}
    return np.asarray([index[v] for v in values], np.int32)
  y = _numeric_values(table, name)
  return y.astype(np.float32)


# -- the source -------------------------------------------------------------------------

def load(cfg: ml_collections.ConfigDict) -> tuple[dict, dict[str, Table]]:
  """(schema, {split: Table}) of `cfg`."""
  given = {"train": Table(cfg.path)}
  for split in ("validation", "test"):
    if cfg[f"{split}_path"]:
      given[split] = Table(cfg[f"{split}_path"])
  schema = infer_schema(cfg, list(given.values()))
  parts = dict(given)
  if len(given) < 3:
    train = given["train"]
    strata = labels(schema, train) if cfg.target == "class" else None
    fractions = {"validation": 0.0 if "validation" in given else cfg.validation_fraction,
                 "test": 0.0 if "test" in given else cfg.test_fraction}
    idx = splits.seeded_split(strata, len(train), fractions["validation"],
                              fractions["test"], cfg.split_seed, what=train.path)
    parts["train"] = train.take(idx["train"])
    for split in ("validation", "test"):
      if split not in given and len(idx[split]):
        parts[split] = train.take(idx[split])
  return fit_statistics(schema, parts["train"]), parts


def arrays(schema: dict, table: Table) -> dict[str, np.ndarray]:
  return {"features": encode(schema, table), "label": labels(schema, table)}


def _build(cfg: ml_collections.ConfigDict, seed: int) -> ArraySource:
  schema, parts = load(cfg)
  data = {split: arrays(schema, table) for split, table in parts.items()}
  evals = {k: v for k, v in data.items() if k != "train" and len(v["label"])}
  return ArraySource(data["train"], evals, schema, seed)


def _from_info(cfg: ml_collections.ConfigDict, info: dict) -> ArraySource:
  empty = {"features": np.zeros((0, info["num_features"]), np.float32),
           "label": np.zeros((0,), np.int32 if info["target"] == "class" else np.float32)}
  return ArraySource(empty, {}, info, 0)


ENTRY = Entry("table", _config, _check, _build, _from_info)
