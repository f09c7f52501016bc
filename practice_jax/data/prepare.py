"""Prepare a dataset into the TFDS data directory, offline if you have its files.

    python -m practice_jax.data.prepare mnist --manual_dir=path/to/mnist_files
    python -m practice_jax.data.prepare fashion_mnist --manual_dir=... --data_dir=...
"""

import sys

from absl import app, flags

from practice_jax.data import catalogue, tfds_source
from practice_jax.errors import UserError

_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", None, "Folder holding the dataset's original files (offline preparation).")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "TFDS data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets).")


def main(argv):
  if len(argv) != 2 or argv[1] not in catalogue.CATALOGUE:
    print(f"usage: python -m practice_jax.data.prepare NAME [--manual_dir=DIR] "
          f"[--data_dir=DIR], with NAME one of {', '.join(catalogue.names())}.", file=sys.stderr)
    return 2
  try:
    builder = tfds_source.prepare(argv[1], _DATA_DIR.value, _MANUAL_DIR.value)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  splits = ", ".join(f"{k}: {v.num_examples}" for k, v in builder.info.splits.items())
  print(f"{argv[1]} is prepared in {builder.data_dir} ({splits}).")
  return 0


if __name__ == "__main__":
  app.run(main)
