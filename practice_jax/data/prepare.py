"""Prepare a dataset into the TFDS data directory, offline if you have its files.

    python -m practice_jax.data.prepare mnist --manual_dir=path/to/mnist_files
    python -m practice_jax.data.prepare fashion_mnist --manual_dir=... --data_dir=...
    python -m practice_jax.data.prepare tiny_shakespeare --manual_dir=folder/with/input.txt

Says what it does, then the size of every split (examples, or characters for a text).
Its splits are also decoded into the array cache (data/tfds_source.py: images and labels,
or a text's bytes), so that training runs read them without TensorFlow from the first run
on.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app, flags

from practice_jax import quiet
from practice_jax.data import catalogue, tfds_source
from practice_jax.errors import UserError

_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", None, "Folder holding the dataset's original files (offline preparation).")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "TFDS data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets).")


def split_sizes(builder) -> str:
  """'train: 60,000 examples, test: 10,000 examples', or for a dataset whose splits are
  each one text (Tiny Shakespeare), their lengths in characters."""
  splits = builder.info.splits
  if "text" not in builder.info.features:
    return ", ".join(f"{name}: {split.num_examples:,} examples" for name, split in splits.items())
  tfds = tfds_source._tfds()
  sizes = []
  for name in splits:
    texts = tfds.as_numpy(builder.as_dataset(split=name))
    sizes.append(f"{name}: {sum(len(x['text'].decode('utf-8')) for x in texts):,} characters")
  return ", ".join(sizes)


def main(argv: list[str]) -> int:
  if len(argv) != 2 or argv[1] not in catalogue.CATALOGUE:
    print(f"usage: python -m practice_jax.data.prepare NAME [--manual_dir=DIR] "
          f"[--data_dir=DIR], with NAME one of {', '.join(catalogue.names())}.", file=sys.stderr)
    return 2
  name = argv[1]
  data_dir = _DATA_DIR.value or tfds_source.default_data_dir()
  start = time.perf_counter()
  try:
    tfds = tfds_source._tfds()
    already = tfds.builder(catalogue.CATALOGUE[name].tfds_name, data_dir=data_dir).is_prepared()
    if not already and (not _MANUAL_DIR.value or os.path.isdir(_MANUAL_DIR.value)):
      source = f" from {_MANUAL_DIR.value}" if _MANUAL_DIR.value else ""
      print(f"Preparing {name} in {data_dir}{source} (about 10 s for MNIST on 2 CPU "
            f"cores)...", flush=True)
    builder = tfds_source.prepare(name, data_dir, _MANUAL_DIR.value)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  spec = catalogue.CATALOGUE[name]
  if tfds_source.cache_root():
    if spec.kind == "image":
      tfds_source.load_image_splits(name, data_dir, None, (spec.train_split, spec.test_split))
    else:
      tfds_source.load_text_splits(name, data_dir, None)
  took = "already there" if already else f"{time.perf_counter() - start:.0f} s"
  print(f"{name} is prepared in {builder.data_dir} ({split_sizes(builder)}; {took}).")
  return 0


if __name__ == "__main__":
  quiet.install()   # before TensorFlow loads; --verbosity shows its and TFDS's lines
  app.run(main)
