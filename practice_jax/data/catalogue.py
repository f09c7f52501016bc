"""The datasets practice_jax knows, by the name used in ``config.data.name``."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  tfds_name: str
  kind: str                                   # "image" (classification) or "text"
  train_split: str = "train"
  test_split: str = "test"
  validation_split: str | None = None         # None: hold out the end of train
  image_shape: tuple[int, int, int] | None = None
  num_classes: int | None = None


CATALOGUE: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec("mnist", "image", image_shape=(28, 28, 1), num_classes=10),
    "fashion_mnist": DatasetSpec("fashion_mnist", "image", image_shape=(28, 28, 1),
                                 num_classes=10),
    "cifar10": DatasetSpec("cifar10", "image", image_shape=(32, 32, 3), num_classes=10),
    "cifar100": DatasetSpec("cifar100", "image", image_shape=(32, 32, 3), num_classes=100),
    "tiny_shakespeare": DatasetSpec("tiny_shakespeare", "text", validation_split="validation"),
}


def names(kind: str | None = None) -> list[str]:
  return sorted(k for k, v in CATALOGUE.items() if kind is None or v.kind == kind)
