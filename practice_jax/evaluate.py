"""Evaluate a trained run on demand: ``python -m practice_jax.evaluate --workdir=DIR``.

Restores the run's checkpoint (the one it reported, or --checkpoint=best|last), prints the
test metrics, the classification report and the confusion matrix, and (re)writes the
report files and PNGs in the workdir.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

from practice_jax import quiet
from practice_jax.errors import UserError

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir.", required=True)
_CHECKPOINT = flags.DEFINE_enum("checkpoint", None, ["best", "last"],
                                "Which checkpoint (default: the one the run used).")
_SPLIT = flags.DEFINE_string(
    "split", "test", "Which evaluator: test, validation, or any other the run has (an "
    "attack such as pgd_eps0.3, a generative task's own).")


def main(argv: list[str]) -> int:
  del argv
  logging.set_verbosity(logging.WARNING)
  from practice_jax import train
  from practice_jax.reporting import plots, writers
  from practice_jax.reporting.artifacts import Artifacts
  from practice_jax.reporting.progress import format_metrics
  try:
    exp, state, step, which = train.load_trained(_WORKDIR.value, _CHECKPOINT.value,
                                                   with_data=True)
    evaluators = exp.task.evaluators()
    if _SPLIT.value not in evaluators:
      raise UserError(f"The run has no evaluator {_SPLIT.value!r}; use --split= one of "
                      f"{', '.join(sorted(evaluators))}.")
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  metrics = evaluators[_SPLIT.value].run(state)
  out = Artifacts(_WORKDIR.value, exp.parallel.is_main, exp.config.plots)
  if hasattr(exp.task, "report") and _SPLIT.value in exp.source.eval_splits:
    print(exp.task.report(state, _SPLIT.value, out)["text"])
  out.figure("learning_curves.png", lambda path: plots.learning_curves(
      writers.read_metrics(_WORKDIR.value), path, title=exp.task.title()))
  print(f"{_SPLIT.value} {format_metrics(metrics, exp.task.METRICS)} ({which} checkpoint, "
        f"step {step}); reports written to {_WORKDIR.value}")
  return 0


if __name__ == "__main__":
  quiet.install()   # before TensorFlow or XLA load; --verbosity shows their lines
  app.run(main)
