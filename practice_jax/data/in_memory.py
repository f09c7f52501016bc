"""Image classification datasets from TFDS (MNIST, Fashion-MNIST, CIFAR), and the
device-resident source for any data that fits in memory.

The splits are loaded once as uint8 numpy arrays and put on the device whole; a compiled
gather takes each chunk's batches from them by index, so no host work happens between
steps. Each epoch's order is a permutation computed from (seed, epoch), which makes the
data a pure function of the step: a resumed run sees exactly the batches an uninterrupted
one would. Normalisation happens on the device, inside the step. With
``config.data.in_memory=False`` the same dataset streams from disk instead
(streaming.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from practice_jax.data import catalogue, tfds_source
from practice_jax.data.base import Entry
from practice_jax.errors import UserError
from practice_jax.state import DATA_STREAM, stream_key

Split = dict[str, np.ndarray]


@dataclasses.dataclass
class ClassificationData:
  train: Split
  validation: Split | None      # the last `validation_size` examples of the train split
  test: Split
  num_classes: int
  class_names: list[str]
  mean: np.ndarray              # per channel, of the training images scaled to [0, 1]
  std: np.ndarray

  @property
  def image_shape(self) -> tuple[int, ...]:
    return tuple(self.train["image"].shape[1:])

  def metadata(self) -> dict:
    """What inference needs (stored in every checkpoint): no dataset required."""
    return {"class_names": self.class_names, "num_classes": self.num_classes,
            "image_shape": list(self.image_shape), "mean": self.mean.tolist(),
            "std": self.std.tolist()}

  @classmethod
  def from_metadata(cls, meta: dict) -> "ClassificationData":
    """Data-free stand-in for inference: empty splits with the stored statistics."""
    empty = {"image": np.zeros((0, *meta["image_shape"]), np.uint8),
             "label": np.zeros((0,), np.int32)}
    return cls(empty, None, empty, len(meta["class_names"]), list(meta["class_names"]),
               np.asarray(meta["mean"], np.float32), np.asarray(meta["std"], np.float32))


def _check_validation_size(validation_size: int, n: int) -> None:
  if validation_size >= n:
    raise UserError(f"data.validation_size={validation_size} leaves no training examples "
                    f"(the training split has {n}); choose a value below {n}.")


def split_validation(train: Split, validation_size: int) -> tuple[Split, Split | None]:
  """Holds out the last `validation_size` training examples (a fixed, documented slice)."""
  _check_validation_size(validation_size, len(train["label"]))
  if validation_size == 0:
    return train, None
  return ({k: v[:-validation_size] for k, v in train.items()},
          {k: v[-validation_size:] for k, v in train.items()})


def labelled_subset(train: Split, n: int, seed: int = 0) -> Split:
  """The first `n` examples (0 = all) of a seeded, class-balanced order of `train`: each
  class's examples shuffled by numpy's default_rng(seed), then taken round-robin over the
  classes, so any prefix is balanced (to within one per class) and the subsets are nested
  (the first 100 are among the first 1000). The order depends on the data and `seed`
  only, never on the run's seed: every run with the same n sees the same examples."""
  total = len(train["label"])
  if not n:
    return train
  if n > total:
    raise UserError(f"config.data.train_examples={n} is more than the {total} training "
                    f"examples (after holding out validation_size); choose at most {total}.")
  rng = np.random.default_rng(seed)
  labels = train["label"]
  classes = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
  # Rank within its class, then class: sorting by (rank, class) interleaves the classes.
  order = np.concatenate(classes)
  rank = np.concatenate([np.arange(len(c)) for c in classes])
  cls = np.concatenate([np.full(len(c), i) for i, c in enumerate(classes)])
  chosen = np.sort(order[np.lexsort((cls, rank))][:n])
  return {k: v[chosen] for k, v in train.items()}


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  x = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
  return x.mean(axis=0).astype(np.float32), x.std(axis=0).astype(np.float32)


def load_classification(cfg: ml_collections.ConfigDict) -> ClassificationData:
  """The dataset of `cfg`. With several processes (multi-host), each reads only its own
  equal share of the training examples (``tfds.even_splits``); the channel statistics
  are combined over all shares; validation and test splits are read whole by every
  process (each evaluates its part of every batch)."""
  spec = catalogue.CATALOGUE[cfg.name]
  process, count = jax.process_index(), jax.process_count()
  if count == 1:   # from the decoded-array cache when it is there (tfds_source)
    splits, names = tfds_source.load_image_splits(
        cfg.name, cfg.data_dir, cfg.manual_dir, (spec.train_split, spec.test_split))
    train, validation = split_validation(splits[spec.train_split], cfg.validation_size)
    train = labelled_subset(train, cfg.get("train_examples", 0))
    # Seconds of float64 arithmetic over every pixel: kept beside the cached arrays.
    mean, std = tfds_source.remembered(
        cfg.name, cfg.data_dir, spec.train_split,
        f"channel_stats(validation_size={cfg.validation_size}, "
        f"train_examples={cfg.get('train_examples', 0)})",
        lambda: channel_stats(train["image"]))
    return ClassificationData(
        train=train, validation=validation, test=splits[spec.test_split],
        num_classes=spec.num_classes, class_names=names, mean=mean, std=std)
  builder = tfds_source.prepare(cfg.name, cfg.data_dir, cfg.manual_dir)
  if cfg.get("train_examples", 0):
    raise UserError("config.data.train_examples works in one process; run with one "
                    "process or leave it at 0.")
  n = builder.info.splits[spec.train_split].num_examples
  _check_validation_size(cfg.validation_size, n)
  keep = n - cfg.validation_size
  shard = tfds_source.even_split(f"{spec.train_split}[:{keep}]", count, process)
  train = tfds_source.load_split(builder, shard)
  validation = (tfds_source.load_split(builder, f"{spec.train_split}[{keep}:]")
                if cfg.validation_size else None)
  mean, std = _global_channel_stats(train["image"])
  return ClassificationData(
      train=train, validation=validation,
      test=tfds_source.load_split(builder, spec.test_split),
      num_classes=spec.num_classes, class_names=tfds_source.class_names(builder),
      mean=mean, std=std)


def _global_channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """channel_stats over the training images of all processes together."""
  from jax.experimental import multihost_utils
  x = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
  local = np.concatenate([[len(x)], x.sum(0), (x * x).sum(0)]).astype(np.float32)
  total = np.asarray(multihost_utils.process_allgather(local), np.float64).sum(0)
  c = images.shape[-1]
  mean = total[1:1 + c] / total[0]
  std = np.sqrt(np.maximum(total[1 + c:] / total[0] - mean * mean, 0.0))
  return mean.astype(np.float32), std.astype(np.float32)


def epoch_permutation(data_key: jax.Array, epoch: int, num_examples: int) -> jax.Array:
  """The order of the training examples in `epoch`: a function of (seed, epoch) only."""
  return _permutation(jax.random.fold_in(data_key, epoch), num_examples)


_permutation = jax.jit(jax.random.permutation, static_argnums=1)


def take(data: dict[str, jax.Array], idx: jax.Array) -> dict[str, jax.Array]:
  """The examples at `idx` of every field."""
  return {k: jnp.take(v, idx, axis=0) for k, v in data.items()}


class ArraySource:
  """Training arrays resident on the devices (this process's share); batches of a chunk
  gathered on the device by index from the epoch's permutation. `select(data, idx)`
  turns a batch of indices into examples (default: `take`)."""

  def __init__(self, train: dict[str, np.ndarray], eval_splits: dict[str, dict],
               info: dict, seed: int, num_examples: int | None = None,
               select: Callable = take, element_spec: dict | None = None):
    self.train, self.eval_splits, self.info = train, eval_splits, info
    self.num_train_examples = (len(next(iter(train.values()))) if num_examples is None
                               else num_examples)
    self.element_spec = element_spec or {
        k: jax.ShapeDtypeStruct(v.shape[1:], v.dtype) for k, v in train.items()}
    self._select, self._data_key = select, stream_key(seed, DATA_STREAM)
    self._device_data = self._gather = None
    self._perm_epoch = self._perm = None

  def steps_per_epoch(self, local_batch: int) -> int:
    return self.num_train_examples // local_batch

  def bind(self, parallel) -> None:
    self._put = parallel.put_local
    self._device_data = parallel.put_local(self.train)
    select = self._select

    def gather(data, perm, first, num_steps, local_batch):
      def batch(i):
        idx = jax.lax.dynamic_slice_in_dim(perm, (first + i) * local_batch, local_batch)
        return select(data, idx)
      return jax.vmap(batch)(jnp.arange(num_steps))
    self._gather = jax.jit(gather, static_argnames=("num_steps", "local_batch"),
                           out_shardings=parallel.local_batches)

  def batches(self, step: int, num_steps: int, local_batch: int) -> Any:
    epoch, index = divmod(step, self.steps_per_epoch(local_batch))
    if index + num_steps > self.steps_per_epoch(local_batch):
      raise ValueError("a chunk of steps must not cross an epoch boundary")
    if epoch != self._perm_epoch:
      self._perm_epoch = epoch
      self._perm = self._put(epoch_permutation(self._data_key, epoch,
                                               self.num_train_examples))
    return self._gather(self._device_data, self._perm, index, num_steps=num_steps,
                        local_batch=local_batch)


# -- config.data for the TFDS image datasets ---------------------------------------------

def _config(name: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = name
  # TFDS data directory; None means $TFDS_DATA_DIR or ~/tensorflow_datasets.
  c.data_dir = ml_collections.config_dict.placeholder(str)
  # A folder holding the dataset's original files (e.g. the four MNIST .gz files), for
  # preparing offline; None means <data_dir>/downloads/manual.
  c.manual_dir = ml_collections.config_dict.placeholder(str)
  # The last `validation_size` examples of the training split are held out for
  # validation (a fixed slice, never shuffled in); the test split is only used at the end.
  c.validation_size = 5000
  # True: the training split lives on the devices (fast). False: it streams from an
  # ArrayRecord copy on disk through grain, for data larger than memory (streaming.py).
  c.in_memory = True
  c.stream_threads = 4           # streaming: reader threads
  c.stream_prefetch = 8          # streaming: batches read ahead
  # Fewer labels: train on the first N of a seeded, class-balanced order of the training
  # examples (0 = all; see labelled_subset). Validation and test are unchanged.
  c.train_examples = 0
  return c


def _check(cfg: ml_collections.ConfigDict) -> str | None:
  if cfg.validation_size < 0:
    return f"config.data.validation_size={cfg.validation_size} must be >= 0."
  if cfg.stream_threads < 1 or cfg.stream_prefetch < 1:
    return "config.data.stream_threads and stream_prefetch must be at least 1."
  n, classes = cfg.get("train_examples", 0), catalogue.CATALOGUE[cfg.name].num_classes
  if n and n < (classes or 1) or n < 0:
    return (f"config.data.train_examples={n} must be 0 (all) or at least the number of "
            f"classes ({classes}), so that every class has an example.")
  if n and not cfg.in_memory:
    return ("config.data.train_examples selects examples in memory; set "
            "config.data.in_memory=True.")
  return None


def _splits(data: ClassificationData) -> dict[str, dict]:
  splits = {"validation": data.validation, "test": data.test}
  return {k: v for k, v in splits.items() if v is not None and len(v["label"])}


def _build(cfg: ml_collections.ConfigDict, seed: int):
  if not cfg.in_memory:
    from practice_jax.data import streaming
    return streaming.tfds_images(cfg, seed)
  data = load_classification(cfg)
  return ArraySource(data.train, _splits(data), data.metadata(), seed)


def _from_info(cfg: ml_collections.ConfigDict, info: dict) -> ArraySource:
  data = ClassificationData.from_metadata(info)
  return ArraySource(data.train, {}, data.metadata(), 0)


ENTRY = Entry("image", _config, _check, _build, _from_info)
