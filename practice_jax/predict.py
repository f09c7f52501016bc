"""Classify new images with a trained run:

    python -m practice_jax.predict --workdir=runs/mnist digit.png [more.png ...]
    python -m practice_jax.predict --workdir=runs/mnist --resize photo_of_a_digit.jpg
    python -m practice_jax.predict --workdir=runs/csv_classification rows.csv [--output=FILE]

A run trained on a CSV table (configs/csv_*.py) predicts the rows of CSV files with the
same columns (the label column may be absent): it writes each file's rows with a
`prediction` column added (and `p(CLASS)` per class for a classifier) to --output, by
default FILE_predictions.csv beside the input. Values are read and encoded with the
run's stored schema (data/tables.py); a category the run never saw is refused, naming
the line and column.

What the model expects is what it was trained on. MNIST: 28x28 grey images of a white
digit on black, the digit fitted in a 20x20 box and centred by its centre of mass.
Fashion-MNIST: 28x28 grey, a light garment on black filling the field (longest side 28),
centred. CIFAR: 32x32 colour photographs filling the frame. Colour images are converted
to grey for one-channel datasets and vice versa.

- ``--invert=auto`` (default): a one-channel image whose border is light (dark ink on
  white paper, the usual scan or drawing) is inverted; ``yes``/``no`` decide it yourself.
  Colour images are inverted only with ``yes``. Transparent pixels count as white paper.
- ``--resize``: an image of any size is brought to the model's. One-channel images are
  framed as the dataset's were made: background set to 0 and the brightest stroke to 255,
  cropped to the ink, scaled with its aspect ratio kept to fit a 20x20 box placed in the
  28x28 field so that its centre of mass is at the centre (MNIST), or to fill the field,
  centred (Fashion-MNIST). Colour images are cropped to the model's aspect ratio around
  the centre and scaled. Without ``--resize`` an image of another size is refused.
- A run trained on your own image folder (data/folders.py) takes images of any size and
  brings them to its size as its training images were (centre crop to a square, resize);
  it inverts nothing unless ``--invert=yes``.
- ``--save_inputs=DIR`` writes the images exactly as the model sees them, to check.

The run's own normalisation (the training set's channel statistics) is applied, and the
top classes are printed with their probabilities; what was done to an image is said in
brackets after its name.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from absl import app, flags, logging

from practice_jax import quiet
from practice_jax.errors import UserError

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir.", required=True)
_TOP = flags.DEFINE_integer("top", 3, "How many classes to show per image.", lower_bound=1)
_CHECKPOINT = flags.DEFINE_enum("checkpoint", None, ["best", "last"],
                                "Which checkpoint (default: the one the run used).")
_RESIZE = flags.DEFINE_bool(
    "resize", False,
    "Bring images of any size to the model's: one-channel images are framed as the "
    "dataset's were made (MNIST: cropped to the ink, fitted in a 20x20 box, centred by "
    "centre of mass in 28x28; Fashion-MNIST: filling 28x28, centred); colour images are "
    "centre-cropped and scaled. Without it, another size is refused.")
_INVERT = flags.DEFINE_enum(
    "invert", "auto", ["auto", "yes", "no"],
    "The model expects a light object on a dark background (MNIST: white digit on black). "
    "auto: invert one-channel images whose border is light (dark ink on white paper).")
_OUTPUT = flags.DEFINE_string(
    "output", None, "Table runs: where to write the predictions CSV (default: "
    "INPUT_predictions.csv beside each input file).")
_EXPLAIN = flags.DEFINE_bool(
    "explain", False, "Also write a saliency PNG per image (the gradient of the predicted "
    "class's logit with respect to the pixels, and SmoothGrad; see practice_jax/inspect.py) "
    "to WORKDIR/inside/explain_<image name>.png.")
_SAVE_INPUTS = flags.DEFINE_string(
    "save_inputs", None, "Folder to write each image to as the model sees it (PNG).")
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache", "~/.cache/practice_jax/xla",
    "Persistent XLA compilation cache folder, shared with main ('' to disable).")

# How each one-channel dataset's images were framed: the box the object was fitted in
# (as a fraction of the field) and what was centred. MNIST: LeCun et al.'s description;
# Fashion-MNIST: Xiao et al. 2017 (longest side resized to 28, centred).
FRAMING = {"mnist": (20 / 28, "mass"), "fashion_mnist": (1.0, "box")}


def _border(image: np.ndarray) -> np.ndarray:
  """The pixels of the outer frame, 1/16 of each side wide (at least one pixel)."""
  h, w = image.shape[:2]
  dy, dx = max(1, h // 16), max(1, w // 16)
  return np.concatenate([image[:dy].ravel(), image[-dy:].ravel(),
                         image[dy:-dy, :dx].ravel(), image[dy:-dy, -dx:].ravel()])


def is_dark_on_light(image: np.ndarray) -> bool:
  """Whether the image's border is light: dark ink on paper, the opposite of MNIST."""
  return float(np.median(_border(image))) > 127.5


def _scale(image: np.ndarray, width: int, height: int) -> np.ndarray:
  """Resized with an anti-aliasing filter; float32 in, float32 out."""
  from PIL import Image
  resized = Image.fromarray(image.astype(np.float32)).resize(
      (width, height), Image.Resampling.LANCZOS)
  return np.clip(np.asarray(resized, np.float32), 0.0, None)


def frame(grey: np.ndarray, field: int = 28, box: int = 20, centre: str = "mass"
          ) -> np.ndarray:
  """A light-on-dark grey image (HW or HW1) framed as MNIST's digits were (the defaults):
  background 0 and brightest stroke 255, cropped to the ink, scaled to fit a `box` square
  with its aspect ratio kept, and placed in a `field` square with its centre of mass
  (centre='mass') or its middle (centre='box') at the centre."""
  x = grey.reshape(grey.shape[:2]).astype(np.float32)
  x = np.clip(x - np.median(_border(x)), 0.0, None)
  canvas = np.zeros((field, field), np.float32)
  if x.max() <= 0:
    return canvas.astype(np.uint8)[..., None]       # nothing drawn: a blank field
  x *= 255.0 / x.max()
  ink = x > 0.1 * 255.0                               # ignore faint noise when cropping
  rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
  x = x[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
  scale = box / max(x.shape)
  x = _scale(x, max(1, round(x.shape[1] * scale)), max(1, round(x.shape[0] * scale)))
  x *= 255.0 / max(float(x.max()), 1e-6)
  if centre == "mass":
    ys, xs = np.indices(x.shape)
    cy, cx = (ys * x).sum() / x.sum(), (xs * x).sum() / x.sum()
  else:
    cy, cx = (x.shape[0] - 1) / 2, (x.shape[1] - 1) / 2
  top, left = round((field - 1) / 2 - cy), round((field - 1) / 2 - cx)
  # Paste, clipping whatever a lopsided centre of mass pushes out of the field.
  y0, x0 = max(top, 0), max(left, 0)
  y1, x1 = min(top + x.shape[0], field), min(left + x.shape[1], field)
  canvas[y0:y1, x0:x1] = x[y0 - top:y1 - top, x0 - left:x1 - left]
  return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)[..., None]


def to_model_input(image: np.ndarray, shape: tuple[int, int, int], invert: str = "auto",
                   resize: bool = False, name: str = "the image", dataset: str = "mnist"
                   ) -> tuple[np.ndarray, list[str]]:
  """`image` (uint8 HWC with the model's channel count) as a model trained on `dataset`
  expects it, and notes saying what was done. A UserError if its size is wrong and
  `resize` is off."""
  notes = []
  height, width, channels = shape
  if invert == "yes" or (invert == "auto" and channels == 1 and is_dark_on_light(image)):
    image = 255 - image
    notes.append("inverted" + (": dark on light" if invert == "auto" else ""))
  if image.shape[:2] == (height, width) and not (resize and channels == 1):
    return image, notes
  if not resize:
    raise UserError(f"{name} is {image.shape[1]}x{image.shape[0]} pixels but the model "
                    f"takes {width}x{height}; pass --resize to fit it.")
  size = f"{image.shape[1]}x{image.shape[0]}"
  if channels == 1 and height == width:
    fraction, centre = FRAMING.get(dataset, (1.0, "box"))
    notes.append(f"framed as {dataset} from {size}")
    return frame(image, height, round(height * fraction), centre), notes
  notes.append(f"resized from {size}")
  from practice_jax.data.images import fit_colour
  return fit_colour(image, height, width), notes


def _as_in_folder(image: np.ndarray, shape, path: str, fit: str = "crop"
                  ) -> tuple[np.ndarray, list[str]]:
  """A run trained on an image folder: any size, brought to the model's as its training
  images were (data/folders.py: config.data.fit, centre crop to a square or padded, and
  resized); inverted only with --invert=yes."""
  from practice_jax.data.images import fit_image
  notes = []
  if _INVERT.value == "yes":
    image, notes = 255 - image, ["inverted"]
  if image.shape[:2] != tuple(shape[:2]):
    notes.append(f"{'padded' if fit == 'pad' else 'resized'} from "
                 f"{image.shape[1]}x{image.shape[0]}")
    image = fit_image(image, shape[0], shape[1], fit)
  return image, notes


def _input_spec(task) -> tuple[tuple[int, int, int], list[str]]:
  """The model's image shape and class names (from the checkpoint's metadata)."""
  return tuple(task.image_shape), list(task.class_names)


def _input_problem(paths: list[str]) -> str | None:
  """One sentence if no input is given, a file is missing or the workdir holds no run."""
  if not paths:
    return "No images given; pass one or more image files after the flags."
  for path in paths:
    if not os.path.exists(path):
      return f"{path} does not exist."
    if os.path.isdir(path):
      return f"{path} is a folder; pass image files (or a CSV file for a table run)."
  if not os.path.isfile(os.path.join(_WORKDIR.value, "config.json")):   # as workdir.py says
    return (f"{_WORKDIR.value} holds no practice_jax run (no config.json); pass the "
            f"--workdir of a run started with python -m practice_jax.main.")
  return None


def enable_compilation_cache(folder: str) -> None:
  """JAX's persistent compilation cache in `folder` ('' = off), for every compiled
  program however quickly it compiles: a command that runs once per invocation, like
  predict, spends most of its time compiling small programs (building the state to
  restore into, the model), each read back in milliseconds on the next call."""
  if not folder:
    return
  import jax
  jax.config.update("jax_compilation_cache_dir", os.path.expanduser(folder))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def main(argv: list[str]) -> int:
  paths = argv[1:]
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  # What can be said without the run is said before JAX and the run load (seconds).
  problem = _input_problem(paths)
  if problem:
    print(f"error: {problem}", file=sys.stderr)
    return 2
  import jax
  enable_compilation_cache(_COMPILATION_CACHE.value)

  from practice_jax import train
  from practice_jax.data.images import read_image
  try:
    exp, state, _, _ = train.load_trained(_WORKDIR.value, _CHECKPOINT.value)
    if exp.config.data.name == "csv":
      return _predict_tables(exp, state, paths)
    if exp.config.task.name != "classification":
      raise UserError(f"{_WORKDIR.value} holds a {exp.config.task.name} run, not an image "
                      f"classifier; use python -m practice_jax.sample for it.")
    shape, names = _input_spec(exp.task)
    fit = exp.config.data.get("fit", "crop")
    prepare = ((lambda image, shape, path: _as_in_folder(image, shape, path, fit))
               if exp.config.data.name == "image_folder" else
               lambda image, shape, path: to_model_input(
                   image, shape, _INVERT.value, _RESIZE.value, path, exp.config.data.name))
    inputs, notes = zip(*(prepare(read_image(p, shape[-1]), shape, p) for p in paths))
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if _SAVE_INPUTS.value:
    from PIL import Image
    os.makedirs(_SAVE_INPUTS.value, exist_ok=True)
    for path, image in zip(paths, inputs):
      name = os.path.splitext(os.path.basename(path))[0] + ".png"
      Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(
          os.path.join(_SAVE_INPUTS.value, name))
  logits = jax.jit(exp.task.logits)(state, np.stack(inputs))
  probs = np.asarray(jax.nn.softmax(logits, axis=-1))
  for path, note, p in zip(paths, notes, probs):
    top = np.argsort(-p)[:_TOP.value]
    said = f" [{'; '.join(note)}]" if note else ""
    print(f"{path}{said}: " + ", ".join(f"{names[i]} {p[i]:.2%}" for i in top))
  if _EXPLAIN.value:
    _explain(exp, state, paths, np.stack(inputs), names)
  return 0


def _explain(exp, state, paths: list[str], inputs: np.ndarray, names: list[str]) -> None:
  """One saliency PNG per image in WORKDIR/inside/ (python -m practice_jax.inspect)."""
  from practice_jax import inspect as inspect_lib
  from practice_jax.reporting import inside
  cls, prob, vanilla, smooth = inspect_lib.saliency_maps(exp.task, state, inputs)
  folder = os.path.join(_WORKDIR.value, inspect_lib.FOLDER)
  os.makedirs(folder, exist_ok=True)
  for i, path in enumerate(paths):
    stem = os.path.splitext(os.path.basename(path))[0]
    out = os.path.join(folder, f"explain_{stem}.png")
    inside.saliency(inputs[i:i + 1], vanilla[i:i + 1], smooth[i:i + 1],
                    [f"{stem}\npred {names[int(cls[i])]} {prob[i]:.0%}"], out,
                    f"{exp.task.title()}: why {names[int(cls[i])]}?")
    print(f"{path}: saliency written to {out}")


def _predict_tables(exp, state, paths: list[str]) -> int:
  """Writes each CSV's rows with the run's predictions added (see the module docstring)."""
  import csv

  import jax

  from practice_jax.data import tables
  if _OUTPUT.value and len(paths) > 1:
    raise UserError("--output names one file; give one CSV at a time, or leave --output "
                    "out to write INPUT_predictions.csv beside each.")
  schema = exp.source.info
  for path in paths:
    table = tables.Table(path)
    features = tables.encode(schema, table)
    header = list(table.header) + ["prediction"]
    if schema["target"] == "class":
      names = list(exp.task.class_names)
      probs = np.asarray(jax.nn.softmax(jax.jit(exp.task.logits)(state, features), -1))
      header += [f"p({name})" for name in names]
      extra = [[names[int(p.argmax())]] + [f"{q:.6f}" for q in p] for p in probs]
    else:
      values = np.asarray(jax.jit(exp.task.predictions)(state, features))
      extra = [[f"{v:.6g}"] for v in values]
    out = _OUTPUT.value or os.path.splitext(path)[0] + "_predictions.csv"
    tmp = out + ".tmp"
    with open(tmp, "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(header)
      writer.writerows(row + e for row, e in zip(table.rows, extra))
    os.replace(tmp, out)
    print(f"{path}: {len(table)} rows predicted, written to {out}")
  return 0


if __name__ == "__main__":
  quiet.install()   # before TensorFlow or XLA load; --verbosity shows their lines
  if any(a in ("-h", "--help", "--helpshort", "-?") for a in sys.argv[1:]):
    # absl prints its help and exits with status 1; asking for help is not an error.
    print(__doc__.strip() + "\n")
    print(flags.FLAGS.main_module_help())
    sys.exit(0)
  app.run(main)
