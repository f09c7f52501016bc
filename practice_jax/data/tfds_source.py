"""Preparing and reading datasets through TFDS, online or fully offline.

Offline preparation: TFDS looks for a dataset's original files (named as in its download
URLs, e.g. ``train-images-idx3-ubyte.gz``) in a manual directory and verifies their size
and sha256 against its own checksums. We pass that directory explicitly, per dataset,
because MNIST and Fashion-MNIST files share names.

Without the files and without a network TFDS would retry downloads for minutes; we probe
the download hosts first (a few seconds) and fail with one sentence naming both remedies.
"""

from __future__ import annotations

import os
import re
import socket
import urllib.parse
from pathlib import Path

import numpy as np

from practice_jax import quiet
from practice_jax.data.catalogue import CATALOGUE
from practice_jax.errors import UserError

PROBE_TIMEOUT_S = 5.0


def _tfds():
  # TensorFlow is only used on the host for reading files: keep it off any GPU so it
  # does not reserve memory that JAX needs. Its start-up notices (oneDNN, CUDA probing)
  # are not the user's concern (see practice_jax/quiet.py).
  with quiet.native_notices_dropped():
    import tensorflow as tf
    tf.config.set_visible_devices([], "GPU")
    import tensorflow_datasets as tfds
  quiet.quiet_tfds(tfds)
  return tfds


def default_data_dir() -> str:
  return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def _hosts_reachable(urls: list[str]) -> bool:
  for url in urls:
    parsed = urllib.parse.urlparse(url)
    host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
      with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
        pass
    except OSError:
      return False
  return True


def prepare(name: str, data_dir: str | None = None, manual_dir: str | None = None,
            file_format: str | None = None):
  """Makes sure dataset `name` is prepared in `data_dir`; returns its TFDS builder.
  With file_format='array_record' (random access, for streaming) the copy is prepared in
  <data_dir>/array_record, beside the default TFRecord one."""
  tfds = _tfds()
  data_dir = data_dir or default_data_dir()
  manual = Path(manual_dir) if manual_dir else Path(data_dir) / "downloads" / "manual"
  if file_format:
    data_dir = str(Path(data_dir) / file_format)
  if manual_dir and not manual.is_dir():
    raise UserError(f"The manual directory {manual} for {name} does not exist; pass the "
                    f"folder that holds {name}'s original files.")
  builder = tfds.builder(CATALOGUE[name].tfds_name, data_dir=data_dir,
                         **({"file_format": file_format} if file_format else {}))
  if builder.is_prepared():
    return builder
  urls = sorted(builder.url_infos or {})
  wanted = [urllib.parse.urlparse(u).path.rsplit("/", 1)[-1] for u in urls]
  missing = [f for f in wanted if not (manual / f).is_file()]
  if manual_dir and missing:
    raise UserError(f"The manual directory {manual} lacks {name}'s file(s) "
                    f"{', '.join(missing)}; put the original files there.")
  if missing and not _hosts_reachable(urls):
    raise UserError(
        f"Dataset {name} is not prepared in {data_dir} and cannot be downloaded (no network); "
        f"put its original files ({', '.join(wanted)}) in a folder and run "
        f"`python -m practice_jax.data.prepare {name} --manual_dir=FOLDER`, or pass "
        f"--config.data.manual_dir=FOLDER.")
  download_config = tfds.download.DownloadConfig(manual_dir=str(manual)) if not missing else None
  from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError
  try:
    # A download directory per dataset: TFDS caches extracted files by name, and MNIST
    # and Fashion-MNIST files share names, so a shared one would hand Fashion-MNIST the
    # MNIST images (seen with TFDS 4.9.10).
    with quiet.foreign_output_dropped():   # "Downloading ... Unknown size" for local files
      builder.download_and_prepare(download_dir=str(Path(data_dir) / "downloads" / name),
                                   download_config=download_config)
  except NonMatchingChecksumError as e:
    found = re.search(r"downloaded to (\S+?),", str(e))
    path = found.group(1) if found else f"one of {name}'s files"
    raise UserError(f"{path} does not match the size and checksum TFDS records for {name}; "
                    f"replace it with the original, unmodified file.") from None
  return builder


def read_all(builder, split: str, **kwargs) -> list:
  """Every element of `split` as numpy; a damaged prepared copy (a truncated or corrupt
  shard, a missing file) is a UserError naming the dataset and how to prepare it again."""
  tfds = _tfds()
  import tensorflow as tf
  try:
    return list(tfds.as_numpy(builder.as_dataset(split=split, **kwargs)))
  except (tf.errors.OpError, OSError) as e:
    reason = (getattr(e, "message", "") or str(e)).strip().splitlines()[0][:160]
    name = builder.info.name
    raise UserError(
        f"The prepared {name} dataset in {builder.data_dir} is damaged ({reason}); delete "
        f"that folder and prepare it again with `python -m practice_jax.data.prepare "
        f"{name} --manual_dir=FOLDER` (or let the next run download it).") from None


def load_split(builder, split: str) -> dict[str, np.ndarray]:
  """The whole split as numpy arrays: {'image': uint8 NHWC, 'label': int32 N}."""
  # Batches rather than batch_size=-1: the latter needs the split's size up front.
  chunks = read_all(builder, split, batch_size=10_000)
  return {"image": np.concatenate([c["image"] for c in chunks]).astype(np.uint8),
          "label": np.concatenate([c["label"] for c in chunks]).astype(np.int32)}


def even_split(split: str, count: int, index: int) -> str:
  """Part `index` of `split` cut into `count` equal parts (the remainder is dropped, so
  every process takes the same number of steps per epoch)."""
  return _tfds().even_splits(split, n=count, drop_remainder=True)[index]


def class_names(builder) -> list[str]:
  return list(builder.info.features["label"].names)
