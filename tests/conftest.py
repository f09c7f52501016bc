"""Shared fixtures: offline mock datasets, tiny configs, and real MNIST from ../shared/data."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import tensorflow_datasets as tfds

from practice_jax.data import tfds_source

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PRACTICE_JAX_SHARED_DATA", REPO.parent / "shared" / "data"))


def load_config(name: str):
  """configs/<name>.py's get_config(), loaded by path as main.py does."""
  spec = importlib.util.spec_from_file_location(f"configs_{name}", REPO / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def tiny(config, epochs: float = 0.5):
  """Shrinks a config to seconds of work on mock data."""
  config.num_epochs = epochs
  config.batch_size = 8
  config.eval_batch_size = 16
  config.steps_per_dispatch = 2
  config.log_every_steps = 2
  config.data.validation_size = 16
  config.schedule.warmup_epochs = 0.0
  config.plots = True
  return config


@pytest.fixture
def mock_tfds(monkeypatch, tmp_path):
  """TFDS datasets of random examples (64 per split), with no files and no network."""
  monkeypatch.setattr(tfds_source, "_hosts_reachable", lambda urls: True)
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  with tfds.testing.mock_data(num_examples=64):
    yield


@pytest.fixture(scope="session")
def real_mnist_data_dir(tmp_path_factory) -> str:
  """A TFDS data dir holding MNIST prepared offline from ../shared/data/mnist."""
  configured = os.environ.get("TFDS_DATA_DIR")
  if configured and (Path(configured) / "mnist").is_dir():
    return configured
  manual = SHARED_DATA / "mnist"
  if not (manual / "train-images-idx3-ubyte.gz").is_file():
    pytest.skip(f"real MNIST files not found in {manual}")
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  tfds_source.prepare("mnist", data_dir, str(manual))
  return data_dir
