"""Shared fixtures: offline mock datasets, tiny configs, and real MNIST from ../shared/data."""

from __future__ import annotations

import importlib.util
import os
import signal
from pathlib import Path

import pytest
import tensorflow_datasets as tfds

from practice_jax.data import tfds_source

# A suite started in the background by a shell without job control (nohup ... &, cron)
# inherits SIGINT ignored, and exec passes that on to every child: the Ctrl-C tests need
# it as a terminal gives it.
signal.signal(signal.SIGINT, signal.default_int_handler)
# Convolution lowerings by the hand-set rule, not measured per machine (models/conv.py's
# autotuning): the same choices on every machine, and no timing inside tests; the
# autotuning tests turn it on themselves.
os.environ.setdefault("PRACTICE_JAX_AUTOTUNE", "0")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PRACTICE_JAX_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_xdist_auto_num_workers(config):
  """`-n auto`: one worker per core, at most 4 (each holds JAX and TensorFlow, ~1 GB)."""
  del config
  return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                    else os.cpu_count() or 1))


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
  if "validation_size" in config.data:    # image datasets only
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


def prepared_mnist_dir() -> str | None:
  """$TFDS_DATA_DIR, else ~/tensorflow_datasets, if MNIST is prepared there (as
  `python -m practice_jax.data.prepare mnist` leaves it)."""
  for data_dir in (os.environ.get("TFDS_DATA_DIR"), "~/tensorflow_datasets"):
    if data_dir and any(Path(data_dir).expanduser().glob("mnist/[0-9]*/dataset_info.json")):
      return str(Path(data_dir).expanduser())
  return None


@pytest.fixture(scope="session")
def real_mnist_data_dir(tmp_path_factory) -> str:
  """A TFDS data dir holding real MNIST: the one the user prepared (see
  `prepared_mnist_dir`), else one prepared offline from ../shared/data/mnist."""
  prepared = prepared_mnist_dir()
  if prepared:
    return prepared
  manual = SHARED_DATA / "mnist"
  if not (manual / "train-images-idx3-ubyte.gz").is_file():
    pytest.skip(f"real MNIST is not prepared in $TFDS_DATA_DIR or ~/tensorflow_datasets "
                f"and its files are not in {manual}: run python -m practice_jax.data.prepare "
                f"mnist (README, Testing)")
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  tfds_source.prepare("mnist", data_dir, str(manual))
  return data_dir


@pytest.fixture(scope="session")
def mnist_files() -> Path:
  """The folder of MNIST's four original files (../shared/data/mnist), for tests that copy
  or damage them; MNIST prepared elsewhere does not help them, so they skip without it."""
  manual = SHARED_DATA / "mnist"
  if not (manual / "train-images-idx3-ubyte.gz").is_file():
    pytest.skip(f"MNIST's original files are not in {manual} (set $PRACTICE_JAX_SHARED_DATA)")
  return manual


def array_task(config, train, eval_splits=None, info=None, parallel=None):
  """The task of `config` on in-memory arrays (no TFDS): `train` and each eval split are
  dicts of numpy arrays; `info` is what the source would report (class names, channel
  statistics, vocabulary)."""
  from practice_jax import tasks
  from practice_jax.data.in_memory import ArraySource
  from practice_jax.parallel import DataParallel
  source = ArraySource(train, eval_splits or {}, info or {}, config.seed)
  return tasks.get(config.task.name)(config, source, parallel or DataParallel())


def image_info(num_classes, image_shape, mean=0.5, std=0.25):
  return {"num_classes": num_classes, "class_names": [str(i) for i in range(num_classes)],
          "image_shape": list(image_shape), "mean": [mean] * image_shape[-1],
          "std": [std] * image_shape[-1]}


def killed_copy(workdir, copy, after_step: int):
  """A copy of a finished run's `workdir` at `copy` as if its process had died after
  the checkpoint of `after_step`: the later checkpoints are dropped."""
  import shutil
  shutil.copytree(workdir, copy)
  for ckpt in (Path(copy) / "checkpoints").iterdir():
    if ckpt.name.isdigit() and int(ckpt.name) > after_step:
      shutil.rmtree(ckpt)
  return copy


def checkpointed_state(config, workdir):
  """The latest checkpointed train state of the run of `config` in `workdir`."""
  from practice_jax import train
  from practice_jax.checkpoint import Checkpointer
  exp = train.build(config)
  state, _ = Checkpointer(str(Path(workdir) / "checkpoints"), 1, create=False).restore(
      exp.task.init_state(exp.plan))
  return state
