"""No dataset: the task makes its data inside the step from the step's key (synthetic
problems, environments stepped inside the compiled step). Batches are empty; the loop
still counts steps, checkpoints and evaluates as for any other source."""

from __future__ import annotations

import ml_collections

from practice_jax.data.base import Entry


class NoData:
  info: dict = {}
  element_spec: dict = {}
  num_train_examples = 0
  eval_splits: dict = {}

  def steps_per_epoch(self, local_batch: int) -> None:
    return None

  def bind(self, parallel) -> None:
    pass

  def batches(self, step: int, num_steps: int, local_batch: int) -> dict:
    return {}


def _config(name: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({"name": name})


ENTRY = Entry("none", _config, lambda cfg: None, lambda cfg, seed: NoData(),
              lambda cfg, info: NoData())
