"""Classify new images with a trained run:

    python -m practice_jax.predict --workdir=runs/mnist digit.png [more.png ...]

Each image must have the dataset's size (28x28 for MNIST); colour images are converted to
grey for one-channel datasets and vice versa. The run's own preprocessing (the training
set's channel statistics) is applied. Prints the top classes with their probabilities.
"""

from __future__ import annotations

import sys

import numpy as np
from absl import app, flags, logging

from practice_jax.errors import UserError

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir.", required=True)
_TOP = flags.DEFINE_integer("top", 3, "How many classes to show per image.")
_CHECKPOINT = flags.DEFINE_enum("checkpoint", None, ["best", "last"],
                                "Which checkpoint (default: the one the run used).")


def load_image(path: str, shape: tuple[int, int, int]) -> np.ndarray:
  """The image at `path` as uint8 HWC with the dataset's shape, or a UserError."""
  from PIL import Image, UnidentifiedImageError
  try:
    with Image.open(path) as image:
      image = image.convert("L" if shape[-1] == 1 else "RGB")
      array = np.asarray(image, np.uint8)
  except FileNotFoundError:
    raise UserError(f"{path} does not exist.") from None
  except (UnidentifiedImageError, OSError) as e:
    raise UserError(f"{path} is not a readable image ({e}).") from None
  array = array.reshape(array.shape[:2] + (shape[-1],))
  if array.shape != tuple(shape):
    raise UserError(f"{path} is {array.shape[1]}x{array.shape[0]} pixels but the model "
                    f"takes {shape[1]}x{shape[0]}; resize it first.")
  return array


def main(argv: list[str]) -> int:
  paths = argv[1:]
  logging.set_verbosity(logging.WARNING)
  import jax

  from practice_jax import train
  try:
    if not paths:
      raise UserError("No images given; pass one or more image files after the flags.")
    exp, state, _, _ = train.load_trained(_WORKDIR.value, _CHECKPOINT.value)
    if exp.config.task != "classification":
      raise UserError(f"{_WORKDIR.value} holds a {exp.config.task} run, not an image "
                      f"classifier; use python -m practice_jax.sample for it.")
    images = np.stack([load_image(p, exp.task.data.image_shape) for p in paths])
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  logits = jax.jit(exp.task.logits)(state, images)
  probs = np.asarray(jax.nn.softmax(logits, axis=-1))
  names = exp.task.data.class_names
  for path, p in zip(paths, probs):
    top = np.argsort(-p)[:_TOP.value]
    print(f"{path}: " + ", ".join(f"{names[i]} {p[i]:.2%}" for i in top))
  return 0


if __name__ == "__main__":
  app.run(main)
