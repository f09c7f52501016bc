"""Sample text from a trained language model:

    python -m practice_jax.sample --workdir=runs/shakespeare_gpt_cpu --prompt "ROMEO:" \
        --length 500 --temperature 0.8 --top_k 40 --seed 0

Generation is one compiled loop (no recompilation per token) and the same seed gives the
same text. Only the checkpoint is needed: the vocabulary is stored with it.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

from practice_jax import quiet
from practice_jax.errors import UserError

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir.", required=True)
_PROMPT = flags.DEFINE_string("prompt", "\n", "Text to continue.")
_LENGTH = flags.DEFINE_integer("length", 500, "Characters to generate.", lower_bound=1)
_TEMPERATURE = flags.DEFINE_float("temperature", 0.8, "Softmax temperature (> 0).")
_TOP_K = flags.DEFINE_integer("top_k", 40, "Sample among the k likeliest (0 = all).",
                              lower_bound=0)
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
_CHECKPOINT = flags.DEFINE_enum("checkpoint", None, ["best", "last"],
                                "Which checkpoint (default: the one the run used).")


def main(argv: list[str]) -> int:
  del argv
  logging.set_verbosity(logging.WARNING)
  from practice_jax import train
  try:
    if _TEMPERATURE.value <= 0:
      raise UserError(f"--temperature={_TEMPERATURE.value} must be positive.")
    if not _PROMPT.value:
      raise UserError("--prompt must hold at least one character.")
    exp, state, _, _ = train.load_trained(_WORKDIR.value, _CHECKPOINT.value)
    if exp.config.task.name != "language_model":
      raise UserError(f"{_WORKDIR.value} holds a {exp.config.task.name} run, not a language "
                      f"model; use python -m practice_jax.predict for it.")
    text = exp.task.sample(state, _PROMPT.value, _LENGTH.value, _TEMPERATURE.value,
                           _TOP_K.value, _SEED.value)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(text)
  return 0


if __name__ == "__main__":
  quiet.install()   # before TensorFlow or XLA load; --verbosity shows their lines
  app.run(main)
