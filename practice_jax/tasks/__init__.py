"""Kinds of experiment. A task knows its data, model, loss, metrics and evaluation; the
training loop in train.py knows none of that and drives any task through this seam:

  task.train_data              dict of arrays that live on the device during training
                               (this process's share, in multi-process runs)
  task.num_train_examples      size of one epoch (of this process's share)
  task.eval_splits             {name: padded dict of arrays with a 0/1 'mask'}
  task.init_state(tx)          -> TrainState (tx: the optax optimizer)
  task.train_batch(data, perm, i, batch_size) -> the i-th batch of an epoch, on device
  task.train_step(state, batch, tx, axis_name=None) -> (state, metric sums)   (pure;
                               under pmap, axis_name names the devices to reduce over)
  task.eval_step(state, batch)  -> metric sums, masked         (pure)
  task.summarize(sums)          -> {'loss': ..., 'accuracy': ...}
  task.metadata()               -> JSON that inference needs (stored in checkpoints)
  task.on_evaluation(state, workdir, step)   (files written at each evaluation)
  task.output_files()           -> names of the files/folders the task writes
  task.write_report(state, parallel, workdir) -> {'text': ...}   (end-of-run report)
  (on_evaluation and write_report run in every process; only process 0 writes files)
"""

from __future__ import annotations

import ml_collections

from practice_jax.tasks.classification import ClassificationTask
from practice_jax.tasks.language_model import LanguageModelTask

_REGISTRY = {
    "classification": ClassificationTask,
    "language_model": LanguageModelTask,
}
# The kind of dataset (data/catalogue.py) each task trains on.
DATA_KIND = {"classification": "image", "language_model": "text"}


def names() -> list[str]:
  return sorted(_REGISTRY)


def output_files() -> list[str]:
  """Every file or folder any task writes in a workdir (what a restart deletes)."""
  return sorted({name for task in _REGISTRY.values() for name in task.output_files()})


def build(config: ml_collections.ConfigDict, metadata: dict | None = None):
  """The task of `config`, with its data; or, given a checkpoint's `metadata`, a data-free
  task for inference."""
  return _REGISTRY[config.task](config, metadata=metadata)
