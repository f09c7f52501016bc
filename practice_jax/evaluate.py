"""Evaluate a trained run on demand: ``python -m practice_jax.evaluate --workdir=DIR``.

Restores the run's checkpoint (the one it reported, or --checkpoint=best|last), prints the
test metrics, the classification report and the confusion matrix, and (re)writes the
report files and PNGs in the workdir.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

from practice_jax import quiet
from practice_jax.errors import UserError

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir.", required=True)
_CHECKPOINT = flags.DEFINE_enum("checkpoint", None, ["best", "last"],
                                "Which checkpoint (default: the one the run used).")
_SPLIT = flags.DEFINE_enum("split", "test", ["test", "validation"], "Which split.")


def main(argv: list[str]) -> int:
  del argv
  logging.set_verbosity(logging.WARNING)
  import jax

  from practice_jax import train
  from practice_jax.reporting import plots, writers
  try:
    exp, state, step, which = train.load_trained(_WORKDIR.value, _CHECKPOINT.value,
                                                   with_data=True)
    if _SPLIT.value not in exp.task.eval_splits:
      raise UserError(f"The run has no {_SPLIT.value} split (data.validation_size=0); "
                      f"use --split=test.")
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  evaluate = exp.parallel.compile_eval(exp.task.eval_step, exp.config.eval_batch_size)
  split = exp.parallel.replicate(exp.task.eval_splits[_SPLIT.value])
  metrics = exp.task.summarize(jax.device_get(evaluate(state, split)))
  report = exp.task.write_report(state, exp.parallel, _WORKDIR.value, _SPLIT.value)
  plots.learning_curves(writers.read_metrics(_WORKDIR.value),
                        os.path.join(_WORKDIR.value, "learning_curves.png"))
  print(report["text"])
  print(f"{_SPLIT.value}: " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()) +
        f" ({which} checkpoint, step {step}); reports written to {_WORKDIR.value}")
  return 0


if __name__ == "__main__":
  quiet.install()   # before TensorFlow or XLA load; --verbosity shows their lines
  app.run(main)
