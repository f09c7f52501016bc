"""The datasets practice_jax knows, by the name used in ``config.data.name``."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  tfds_name: str
  train_split: str
  test_split: str
  image_shape: tuple[int, int, int]
  num_classes: int


CATALOGUE: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec("mnist", "train", "test", (28, 28, 1), 10),
    "fashion_mnist": DatasetSpec("fashion_mnist", "train", "test", (28, 28, 1), 10),
    "cifar10": DatasetSpec("cifar10", "train", "test", (32, 32, 3), 10),
    "cifar100": DatasetSpec("cifar100", "train", "test", (32, 32, 3), 100),
}


def names() -> list[str]:
  return sorted(CATALOGUE)
