"""The input path for datasets that fit in memory (MNIST, Fashion-MNIST, CIFAR).

The splits are loaded once as uint8 numpy arrays and put on the device whole; the compiled
train step gathers its batch from them by index, so no host work happens between steps.
Each epoch's order is a permutation computed from (seed, epoch), which makes the data a
pure function of the step: a resumed run sees exactly the batches an uninterrupted one
would. Normalisation happens on the device, inside the step.
"""

from __future__ import annotations

import dataclasses

import jax
import ml_collections
import numpy as np

from practice_jax.data import catalogue, tfds_source
from practice_jax.errors import UserError

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
    return {"class_names": self.class_names, "image_shape": list(self.image_shape),
            "mean": self.mean.tolist(), "std": self.std.tolist()}

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


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  x = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
  return x.mean(axis=0).astype(np.float32), x.std(axis=0).astype(np.float32)


def load_classification(cfg: ml_collections.ConfigDict) -> ClassificationData:
  """The dataset of `cfg`. With several processes (multi-host), each reads only its own
  equal share of the training examples (``tfds.even_splits``); the channel statistics
  are combined over all shares; validation and test splits are read whole by every
  process (each evaluates its part of every batch)."""
  spec = catalogue.CATALOGUE[cfg.name]
  builder = tfds_source.prepare(cfg.name, cfg.data_dir, cfg.manual_dir)
  process, count = jax.process_index(), jax.process_count()
  if count == 1:
    train, validation = split_validation(tfds_source.load_split(builder, spec.train_split),
                                         cfg.validation_size)
    mean, std = channel_stats(train["image"])
  else:
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


def pad_for_eval(split: Split, batch_size: int) -> Split:
  """Pads a split to whole batches and adds a 0/1 'mask', so every example counts once."""
  n = len(next(iter(split.values())))
  padded = -(-n // batch_size) * batch_size
  out = {k: np.concatenate([v, np.zeros((padded - n,) + v.shape[1:], v.dtype)])
         for k, v in split.items()}
  out["mask"] = (np.arange(padded) < n).astype(np.float32)
  return out


def epoch_permutation(data_key: jax.Array, epoch: int, num_examples: int) -> jax.Array:
  """The order of the training examples in `epoch`: a function of (seed, epoch) only."""
  return _permutation(jax.random.fold_in(data_key, epoch), num_examples)


_permutation = jax.jit(jax.random.permutation, static_argnums=1)
