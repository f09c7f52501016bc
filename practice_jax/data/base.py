"""What every data source provides (see the package docstring) and its registry entry."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import ml_collections


class Source(Protocol):
  info: dict
  element_spec: dict
  num_train_examples: int
  eval_splits: dict[str, dict[str, Any]]

  def steps_per_epoch(self, local_batch: int) -> int | None: ...
  def bind(self, parallel) -> None: ...
  def batches(self, step: int, num_steps: int, local_batch: int) -> Any: ...


@dataclasses.dataclass(frozen=True)
class Entry:
  kind: str                                       # what tasks accept: image, text, none
  config: Callable[[str], ml_collections.ConfigDict]
  check: Callable[[ml_collections.ConfigDict], str | None]
  build: Callable[[ml_collections.ConfigDict, int], Source]        # (cfg, seed)
  from_info: Callable[[ml_collections.ConfigDict, dict], Source]   # data-free, inference
