"""Streaming data larger than memory through grain, with exact resume.

The examples stay on disk in a random-access source (an ArrayRecord copy prepared by
TFDS, or any object with ``__len__`` and ``__getitem__``). Each step's local batch is a
pure function of (seed, step), as in memory: epoch = step // steps_per_epoch, the epoch's
order a permutation drawn from (seed, epoch), this process's rows a fixed share of it. A
``grain.MapDataset`` over step numbers maps each step to its batch and an iterator with
reader threads and a prefetch buffer reads ahead; a resumed run (or any jump) starts a
new iterator at its step, so the position to checkpoint is the step itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

_STEPS = 2 ** 40   # the step dataset is unbounded in practice


class StreamingSource:

  def __init__(self, examples: Sequence[dict[str, np.ndarray]], eval_splits: dict,
               info: dict, seed: int, threads: int = 4, prefetch: int = 8,
               process_index: int | None = None, process_count: int | None = None):
    """`examples[i]` is example i as a dict of numpy arrays (all of the training split:
    each process reads its own share of every epoch's permutation)."""
    self.examples, self.eval_splits, self.info = examples, eval_splits, info
    self.seed, self.threads, self.prefetch = seed, threads, prefetch
    self.process_index = jax.process_index() if process_index is None else process_index
    self.process_count = jax.process_count() if process_count is None else process_count
    self.num_total = len(examples)
    self.num_train_examples = self.num_total // self.process_count
    first = examples[0]
    self.element_spec = {k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype)
                         for k, v in first.items()}
    self._iterator, self._next_step, self._local_batch = None, None, None
    self._perms: dict[int, np.ndarray] = {}

  def steps_per_epoch(self, local_batch: int) -> int:
    return self.num_train_examples // local_batch

  def bind(self, parallel) -> None:
    pass   # batches are host arrays; the parallel layer puts them on the devices

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch not in self._perms:
      self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(
          self.num_total)}
    return self._perms[epoch]

  def batch_at(self, step: int, local_batch: int) -> dict[str, np.ndarray]:
    """The local batch of `step` (a pure function of seed, step and process)."""
    epoch, index = divmod(step, self.steps_per_epoch(local_batch))
    share = self.num_train_examples
    order = self._permutation(epoch)[self.process_index * share:
                                     (self.process_index + 1) * share]
    rows = [self.examples[int(i)] for i in order[index * local_batch:
                                                 (index + 1) * local_batch]]
    return {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}

  def _start(self, step: int, local_batch: int) -> None:
    import grain
    steps = grain.MapDataset.range(step, _STEPS).map(
        lambda s: self.batch_at(int(s), local_batch))
    self._iterator = iter(steps.to_iter_dataset(grain.ReadOptions(
        num_threads=self.threads, prefetch_buffer_size=self.prefetch)))
    self._next_step, self._local_batch = step, local_batch

  def batches(self, step: int, num_steps: int, local_batch: int) -> Any:
    if step != self._next_step or local_batch != self._local_batch:
      self._start(step, local_batch)
    chunk = [next(self._iterator) for _ in range(num_steps)]
    self._next_step = step + num_steps
    return {k: np.stack([b[k] for b in chunk]) for k in chunk[0]}


class _TfdsExamples:
  """A TFDS ArrayRecord data source as a sequence of {'image', 'label'} numpy dicts."""

  def __init__(self, source, start: int = 0, stop: int | None = None):
    self.source, self.start = source, start
    self.stop = len(source) if stop is None else stop

  def __len__(self) -> int:
    return self.stop - self.start

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    ex = self.source[self.start + i]
    return {"image": np.asarray(ex["image"], np.uint8), "label": np.int32(ex["label"])}


def tfds_images(cfg: ml_collections.ConfigDict, seed: int) -> StreamingSource:
  """A TFDS image dataset streamed from an ArrayRecord copy (prepared once into
  <data_dir>/array_record); the validation slice and the test split are read into memory
  for evaluation, the channel statistics from the first 10,000 training images."""
  from practice_jax.data import catalogue, in_memory, tfds_source
  spec = catalogue.CATALOGUE[cfg.name]
  builder = tfds_source.prepare(cfg.name, cfg.data_dir, cfg.manual_dir,
                                file_format="array_record")
  everything = builder.as_data_source(split=spec.train_split)
  n = len(everything)
  in_memory._check_validation_size(cfg.validation_size, n)
  train = _TfdsExamples(everything, 0, n - cfg.validation_size)

  def read(examples) -> dict[str, np.ndarray]:
    rows = [examples[i] for i in range(len(examples))]
    return {"image": np.stack([r["image"] for r in rows]),
            "label": np.asarray([r["label"] for r in rows], np.int32)}

  splits = {"test": read(_TfdsExamples(builder.as_data_source(split=spec.test_split)))}
  if cfg.validation_size:
    splits["validation"] = read(_TfdsExamples(everything, n - cfg.validation_size, n))
  sample = read(_TfdsExamples(everything, 0, min(10_000, len(train))))
  mean, std = in_memory.channel_stats(sample["image"])
  data = in_memory.ClassificationData(sample, None, splits["test"], spec.num_classes,
                                      tfds_source.class_names(builder), mean, std)
  return StreamingSource(train, splits, data.metadata(), seed, cfg.stream_threads,
                         cfg.stream_prefetch)
