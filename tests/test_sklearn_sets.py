"""The real small data sets of scikit-learn's wheel, written as an image folder and CSV
files that the folder and table sources read with their seeded splits."""

from __future__ import annotations

import os

import pytest

from practice_jax import data
from practice_jax.data import folders, tables

pytest.importorskip("sklearn")
from practice_jax.data import sklearn_sets  # noqa: E402


def test_written_sets_load_as_folders_and_tables(tmp_path):
  out = str(tmp_path)
  assert sklearn_sets.write_digits(out) == 1797
  assert sklearn_sets.write_tables(out) == {"breast_cancer": 569, "wine": 178, "diabetes": 442}
  cfg = data.data_config("image_folder", path=os.path.join(out, "digits"), image_size=8,
                         channels=1, validation_fraction=0.0, cache_dir=str(tmp_path / "c"))
  names, parts = folders.read_splits(cfg)
  assert names == [str(d) for d in range(10)]
  assert len(parts["train"]["label"]) + len(parts["test"]["label"]) == 1797
  assert len(parts["test"]["label"]) == 359                  # 20% of each digit, rounded
  assert parts["train"]["image"].max() == 255
  cfg = data.data_config("csv", path=os.path.join(out, "wine", "train.csv"),
                         test_path=os.path.join(out, "wine", "test.csv"),
                         validation_fraction=0.0)
  schema, split = tables.load(cfg)
  assert schema["class_names"] == ["class_0", "class_1", "class_2"]
  assert schema["num_features"] == 13 and len(split["test"]) == 36
  cfg = data.data_config("csv", path=os.path.join(out, "diabetes", "train.csv"),
                         target="number", validation_fraction=0.0, test_fraction=0.0)
  schema, split = tables.load(cfg)
  assert len(split["train"]) == 354 and schema["label_std"] > 0     # 80% of 442


def test_the_configs_of_the_written_sets_are_valid(tmp_path):
  from conftest import load_config
  from practice_jax.validation import validate
  sklearn_sets.write_tables(str(tmp_path))
  for name in ("breast_cancer", "wine", "diabetes"):
    config = load_config(name)
    for key in ("path", "test_path"):
      config.data[key] = config.data[key].replace("data/sklearn", str(tmp_path))
    validate(config, 1)
  config = load_config("digits")
  config.data.path = str(tmp_path)        # any folder: validate does not read the images
  validate(config, 1)
