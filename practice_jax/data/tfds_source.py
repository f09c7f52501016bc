"""Preparing and reading datasets through TFDS, online or fully offline.

Offline preparation: TFDS looks for a dataset's original files (named as in its download
URLs, e.g. ``train-images-idx3-ubyte.gz``) in a manual directory and verifies their size
and sha256 against its own checksums. We pass that directory explicitly, per dataset,
because MNIST and Fashion-MNIST files share names.

Without the files and without a network TFDS would retry downloads for minutes; we probe
the download hosts first (a few seconds) and fail with one sentence naming both remedies.

Reading a dataset through TFDS imports TensorFlow (seconds) and, for images, decodes every
PNG through it (decoding MNIST takes more). So `load_image_splits` and `load_text_splits`
keep each split's decoded arrays (images and labels; a text's UTF-8 bytes) as ``.npy``
files in ``$PRACTICE_JAX_DATA_CACHE`` (default
``~/.cache/practice_jax/tfds``; ``0`` turns the cache off), one folder per (dataset, split,
TFDS data directory), with a fingerprint of the prepared files (names, sizes,
modification times, ``dataset_info.json``), the installed TFDS version and the decoding
settings: a run whose fingerprint matches reads the arrays memory-mapped and never imports
TensorFlow; a re-prepared dataset or another TFDS version decodes again. Files are written
to a temporary folder and renamed into place whole; a file whose size or modification time
changed since is checked against its crc32, and one that fails it is decoded again with a
warning; a cache that cannot be written is skipped (the run goes on).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import time
import urllib.parse
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

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


def _check_manual_dir(name: str, manual_dir: str | None) -> None:
  """A given --config.data.manual_dir must exist, prepared dataset or not."""
  if manual_dir and not Path(manual_dir).is_dir():
    raise UserError(f"The manual directory {manual_dir} for {name} does not exist; pass "
                    f"the folder that holds {name}'s original files.")


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
  _check_manual_dir(name, manual_dir)
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



# -- the decoded arrays, cached (see the module docstring) --------------------------------

CACHE_VERSION = 1
# The arrays cached per split, by the dataset's kind: load_split's for images, the
# split's text as UTF-8 bytes for text.
_FIELDS = {"image": {"image": "uint8", "label": "int32"}, "text": {"text": "uint8"}}
_VERSION_DIR = re.compile(r"^\d+\.\d+\.\d+$")


def cache_root() -> str | None:
  """The cache folder, or None when $PRACTICE_JAX_DATA_CACHE turns it off (0, off, '')."""
  value = os.environ.get("PRACTICE_JAX_DATA_CACHE")
  if value is None:
    return os.path.expanduser("~/.cache/practice_jax/tfds")
  if value.strip().lower() in ("", "0", "off", "false", "no"):
    return None
  return os.path.expanduser(value)


@functools.lru_cache(maxsize=1)
def _tfds_version() -> str:
  import importlib.metadata
  try:
    return importlib.metadata.version("tensorflow-datasets")
  except importlib.metadata.PackageNotFoundError:
    return "unknown"


def _tfds_mocked() -> bool:
  """Whether tfds.testing.mock_data is in effect (tests): its examples come from TFDS, not
  from any prepared files, so they are neither read from nor written to the cache."""
  core = sys.modules.get("tensorflow_datasets.core.dataset_builder")
  method = getattr(getattr(core, "DatasetBuilder", None), "download_and_prepare", None)
  return getattr(method, "__name__", "") == "mock_download_and_prepare"


def fingerprint(name: str, data_dir: str, split: str) -> str | None:
  """Of the prepared copy of dataset `name` in `data_dir` (every version folder TFDS could
  read: each file's name, size and modification time, and dataset_info.json's bytes), the
  installed TFDS version, `split` and the decoding settings; None if no copy is prepared
  there (TFDS then prepares it first)."""
  root = Path(data_dir) / CATALOGUE[name].tfds_name
  try:
    versions = sorted(v for v in os.listdir(root)
                      if _VERSION_DIR.match(v) and (root / v / "dataset_info.json").is_file())
  except OSError:
    return None
  if not versions:
    return None
  h = hashlib.blake2b(digest_size=16)
  h.update(json.dumps([CACHE_VERSION, name, CATALOGUE[name].tfds_name, split,
                       _tfds_version(), _fields(name)]).encode())
  for version in versions:
    for folder, dirs, files in os.walk(root / version):
      dirs.sort()
      for f in sorted(files):
        path = os.path.join(folder, f)
        st = os.stat(path)
        h.update(f"{os.path.relpath(path, root)}\0{st.st_size}\0{st.st_mtime_ns}\1".encode())
    h.update((root / version / "dataset_info.json").read_bytes())
  return h.hexdigest()


def _fields(name: str) -> dict[str, str]:
  return _FIELDS[CATALOGUE[name].kind]


def _entry(root: str, name: str, data_dir: str, split: str) -> Path:
  """The cache folder of (dataset, split, data directory)."""
  where = hashlib.blake2b(os.path.realpath(data_dir).encode(), digest_size=6).hexdigest()
  return Path(root) / name / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', split)}-{where}"


def _crc32(path: Path) -> int:
  crc = 0
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      crc = zlib.crc32(block, crc)
  return crc


def _read_cache(entry: Path, key: str, fields: dict[str, str]
                ) -> tuple[dict[str, np.ndarray], list[str]] | None:
  """The cached split (memory-mapped, read-only) and class names if `entry` holds the
  arrays of fingerprint `key`; None if it is absent or stale; a damaged one is None with
  a warning (it is decoded and written again)."""
  try:
    meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    return _damaged(entry, f"meta.json unreadable: {e}")
  if meta.get("fingerprint") != key:
    return None                   # another preparation or TFDS version: decoded again
  arrays = {}
  try:
    for field, dtype in fields.items():
      path = entry / f"{field}.npy"
      expected = meta["files"][field]
      st = path.stat()
      # Untouched since written (size and modification time): no need to read it all;
      # otherwise (copied, touched, rewritten) its checksum decides.
      if st.st_size != expected["size"] or (
          st.st_mtime_ns != expected.get("mtime_ns") and _crc32(path) != expected["crc32"]):
        return _damaged(entry, f"{path.name} does not match its checksum")
      array = np.load(path, mmap_mode="r", allow_pickle=False)
      if array.dtype != np.dtype(dtype) or list(array.shape) != expected["shape"]:
        return _damaged(entry, f"{path.name} has the wrong shape or type")
      arrays[field] = np.asarray(array)
    return arrays, list(meta["class_names"])
  except (OSError, ValueError, KeyError, TypeError) as e:
    return _damaged(entry, f"{type(e).__name__}: {e}")


def _damaged(entry: Path, reason: str) -> None:
  print(f"warning: the cached arrays in {entry} are damaged ({reason}); decoding the "
        f"dataset again.", file=sys.stderr, flush=True)
  return None


def _write_cache(entry: Path, key: str, data_dir: str, arrays: dict[str, np.ndarray],
                 class_names: list[str], fields: dict[str, str]) -> None:
  """Writes the split to a temporary folder beside `entry` and renames it into place; a
  cache that cannot be written (read-only home, full disk) is skipped with a warning."""
  tmp = entry.with_name(f"{entry.name}.tmp{os.getpid()}")
  try:
    tmp.mkdir(parents=True, exist_ok=True)
    files = {}
    for field, dtype in fields.items():
      path = tmp / f"{field}.npy"
      array = np.ascontiguousarray(arrays[field], dtype=dtype)
      with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
      st = path.stat()
      files[field] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "crc32": _crc32(path),
                      "shape": list(array.shape)}
    (tmp / "meta.json").write_text(json.dumps(
        {"fingerprint": key, "data_dir": os.path.realpath(data_dir), "files": files,
         "class_names": list(class_names), "written": time.time()}), encoding="utf-8")
    old = entry.with_name(f"{entry.name}.old{os.getpid()}")
    if entry.exists():
      os.replace(entry, old)      # a folder cannot be renamed onto a non-empty one
    os.replace(tmp, entry)
    shutil.rmtree(old, ignore_errors=True)
    _forget_removed_data_dirs(entry.parent)
  except OSError as e:
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"warning: could not cache the decoded arrays in {entry.parent} ({e}); the next "
          f"run decodes the dataset again.", file=sys.stderr, flush=True)


def _forget_removed_data_dirs(folder: Path) -> None:
  """Deletes the entries of data directories that no longer exist (e.g. tests' temporary
  ones), and temporary folders an interrupted write left over an hour ago."""
  for entry in folder.iterdir():
    try:
      if ".tmp" in entry.name or ".old" in entry.name:
        if time.time() - entry.stat().st_mtime > 3600:
          shutil.rmtree(entry, ignore_errors=True)
        continue
      meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
      if not os.path.isdir(meta["data_dir"]):
        shutil.rmtree(entry, ignore_errors=True)
    except (OSError, ValueError, KeyError, TypeError):
      continue


def remembered(name: str, data_dir: str | None, split: str, what: str,
               compute: Callable[[], tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
  """`compute()` (a few small float32 arrays computed from the split's arrays, e.g. the
  channel statistics), kept as `what` beside the split's cached arrays, so a later run
  reads exactly the values (bit for bit) instead of computing them again; computed
  every time when the split is not cached."""
  data_dir = data_dir or default_data_dir()
  root = None if _tfds_mocked() else cache_root()
  key = fingerprint(name, data_dir, split) if root else None
  if key is None:
    return compute()
  entry = _entry(root, name, data_dir, split)
  try:
    memo = json.loads((entry / "memo.json").read_text(encoding="utf-8"))
    if memo.get("fingerprint") == key and what in memo["values"]:
      return tuple(np.asarray(v, np.float32) for v in memo["values"][what])
  except (OSError, ValueError, KeyError, TypeError):
    memo = None
  values = compute()
  try:
    meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
    if meta.get("fingerprint") != key:
      return values                 # the split's arrays are not (or no longer) cached
    if not memo or memo.get("fingerprint") != key:
      memo = {"fingerprint": key, "values": {}}
    # float32 -> Python float (a double) -> float32 is exact: the same bits come back.
    memo["values"][what] = [np.asarray(v, np.float32).tolist() for v in values]
    tmp = entry / f"memo.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(memo), encoding="utf-8")
    os.replace(tmp, entry / "memo.json")
  except (OSError, ValueError, KeyError, TypeError):
    pass                            # not kept: computed again next time
  return values


def load_image_splits(name: str, data_dir: str | None, manual_dir: str | None,
                      splits: Sequence[str]) -> tuple[dict[str, dict[str, np.ndarray]], list[str]]:
  """({split: {'image': uint8 NHWC, 'label': int32 N}}, class names) of image dataset
  `name`: from the cache when it holds the prepared files' arrays (no TensorFlow), else
  read through TFDS (preparing the dataset first if needed) and cached."""
  return _cached_splits(name, data_dir, manual_dir, splits, load_split, class_names)


def _text_split(builder, split: str) -> dict[str, np.ndarray]:
  text = "".join(ex["text"].decode("utf-8") for ex in read_all(builder, split))
  return {"text": np.frombuffer(text.encode("utf-8"), np.uint8)}


def load_text_splits(name: str, data_dir: str | None, manual_dir: str | None
                     ) -> dict[str, str]:
  """{'train'|'validation'|'test': that split's whole text (its examples joined)} of text
  dataset `name`, its catalogue entry naming the TFDS splits; cached like the image
  datasets' arrays, so a later run reads it without TensorFlow."""
  spec = CATALOGUE[name]
  parts = {"train": spec.train_split, "validation": spec.validation_split,
           "test": spec.test_split}
  arrays, _ = _cached_splits(name, data_dir, manual_dir, sorted(set(parts.values())),
                             _text_split, lambda builder: [])
  return {part: arrays[split]["text"].tobytes().decode("utf-8")
          for part, split in parts.items()}


def _cached_splits(name: str, data_dir: str | None, manual_dir: str | None,
                   splits: Sequence[str], decode: Callable[[Any, str], dict[str, np.ndarray]],
                   names_of: Callable[[Any], list[str]]
                   ) -> tuple[dict[str, dict[str, np.ndarray]], list[str]]:
  """The arrays of each split (`decode(builder, split)`) and the dataset's class names
  (`names_of(builder)`): from the cache where it holds them, else through TFDS, then
  cached."""
  _check_manual_dir(name, manual_dir)
  data_dir = data_dir or default_data_dir()
  root = None if _tfds_mocked() else cache_root()
  fields = _fields(name)
  found, names = {}, None
  if root:
    for split in splits:
      key = fingerprint(name, data_dir, split)
      hit = _read_cache(_entry(root, name, data_dir, split), key, fields) if key else None
      if hit:
        found[split], names = hit
  if len(found) == len(splits):
    return {s: found[s] for s in splits}, names
  builder = prepare(name, data_dir, manual_dir)
  names = names_of(builder)
  todo = [s for s in splits if s not in found]
  if root:
    print(f"Decoding {name} ({' and '.join(todo)}) through TFDS, once: the arrays are "
          f"cached in {root} for the next runs...", flush=True)
  for split in todo:
    found[split] = decode(builder, split)
    key = fingerprint(name, data_dir, split) if root else None
    if key:
      _write_cache(_entry(root, name, data_dir, split), key, data_dir, found[split], names,
                   fields)
  return {s: found[s] for s in splits}, names
