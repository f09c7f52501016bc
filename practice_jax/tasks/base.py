"""The seam between the one training loop (train.py) and a kind of experiment.

A task builds its model(s), optimizer(s) and initial state, and says how to train and
evaluate them; the loop knows nothing else about it:

  Task.config()                 -> its own config section (``config.task``), with defaults
  Task.check(config)            -> the first problem with the config, or None (before any
                                   data is loaded or file written)
  Task.DATA_KINDS               the kinds of data it takes (data/__init__.py)
  Task.METRICS                  {name: Metric}: every metric it reports, with its direction
  Task.MONITOR                  the default early-stopping metric, 'evaluator/metric'
  Task.OUTPUTS                  the files it writes in a workdir (a restart deletes them)
  task = Task(config, source, parallel)
  task.init_state(plan)         -> the state: any pytree with a `step` counter (the
                                   task builds its optimizers here, from the plan)
  task.schedules                {name: optax schedule}, logged as train/<name>
  task.train_step(state, batch) -> (state, metric sums)       pure; `batch` is the
                                   source's (empty for tasks that make their own data)
  task.summarize(sums)          -> {metric: value}
  task.evaluators()             -> {name: Evaluator}: periodic ones run at step 0 and at
                                   every evaluation, the others once at the end (by
                                   default one per source split through task.eval_step)
  task.artifacts(state, step, out, final) -> text for the console; files go through
                                   `out` (reporting/artifacts.py), which alone knows
                                   which process writes
  task.metadata()               -> JSON that inference needs (stored in checkpoints)
  task.title(), task.num_parameters(state)   for the console and plots
  task.unroll_on_cpu            whether its steps are unrolled on CPU (parallel.py)

A new kind of experiment is one file in this package plus one ``register`` line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

from practice_jax import optim


@dataclasses.dataclass(frozen=True)
class Metric:
  """How to read a metric: its direction (for early stopping, the best checkpoint and
  comparisons) and whether it is a fraction shown as a percentage."""
  higher_is_better: bool
  percent: bool = False


LOWER, HIGHER, FRACTION = Metric(False), Metric(True), Metric(True, percent=True)


@dataclasses.dataclass(frozen=True)
class Evaluator:
  run: Callable[[Any], dict[str, float]]     # state -> {metric: value}
  periodic: bool = True                      # False: only once, at the end of the run


def pad_for_eval(split: dict[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
  """Pads a split to whole batches and adds a 0/1 'mask', so every example counts once."""
  n = len(next(iter(split.values())))
  padded = -(-n // batch_size) * batch_size
  out = {k: np.concatenate([v, np.zeros((padded - n,) + v.shape[1:], v.dtype)])
         for k, v in split.items()}
  out["mask"] = (np.arange(padded) < n).astype(np.float32)
  return out


def split_evaluator(parallel, eval_step: Callable, summarize: Callable,
                    split: dict[str, np.ndarray], batch_size: int,
                    periodic: bool = True) -> Evaluator:
  """Evaluates `eval_step(state, padded batch) -> masked metric sums` over a whole split
  in one dispatch; `batch_size` is the global evaluation batch."""
  padded = parallel.replicate(pad_for_eval(split, batch_size))
  evaluate = parallel.compile_eval(eval_step, batch_size)
  return Evaluator(lambda state: summarize(jax.device_get(evaluate(state, padded))),
                   periodic)


def mean_metrics(sums: dict[str, Any], count: str = "count") -> dict[str, float]:
  """{'x_sum': s, 'count': n} -> {'x': s / n} for every key ending in '_sum'."""
  n = max(float(np.asarray(sums[count])), 1.0)
  return {k[:-4]: float(np.asarray(v)) / n for k, v in sums.items() if k.endswith("_sum")}


class Task:
  """Defaults shared by tasks; see the module docstring for the protocol."""
  DATA_KINDS: tuple[str, ...] = ()
  METRICS: dict[str, Metric] = {}
  MONITOR = "validation/loss"
  OUTPUTS: tuple[str, ...] = ()

  @staticmethod
  def config() -> ml_collections.ConfigDict:
    raise NotImplementedError

  @staticmethod
  def check(config: ml_collections.ConfigDict) -> str | None:
    return optim.check(config.optimizer, config.schedule)

  def __init__(self, config: ml_collections.ConfigDict, source, parallel):
    self.config, self.source, self.parallel = config, source, parallel
    self.schedules: dict[str, Any] = {}

  unroll_on_cpu = False

  def metadata(self) -> dict:
    return self.source.info

  def title(self) -> str:
    """What is trained on what, for the console and plot titles."""
    return f"{self.config.model.name} on {self.config.data.name}"

  def num_parameters(self, state: Any) -> int:
    return sum(int(np.prod(np.shape(p))) for p in jax.tree.leaves(state.params))

  def evaluators(self) -> dict[str, Evaluator]:
    """One evaluator per split of the source, running the task's masked `eval_step`
    (state, padded batch) -> metric sums; 'test' only once, at the end."""
    return {name: split_evaluator(self.parallel, self.eval_step, self.summarize, split,
                                  self.config.eval_batch_size, periodic=name != "test")
            for name, split in self.source.eval_splits.items()}

  def artifacts(self, state: Any, step: int, out, final: bool) -> str:
    return ""
