"""The user's own image folders: ``config.data.name='image_folder'`` with
``config.data.path=FOLDER``.

Layout: one sub-folder per class (its name is the class name), images anywhere below it:

    FOLDER/cat/001.jpg, FOLDER/dog/x/002.png, ...

or already split, with the same class folders in each part (validation and test are
optional; a missing part is cut from train by the seeded split of data/splits.py):

    FOLDER/train/cat/..., FOLDER/validation/cat/... (or val/), FOLDER/test/cat/...

Every file counts as an image except hidden ones (a leading dot) and Thumbs.db /
desktop.ini; a file that is not an image, an empty class folder, or fewer than two
classes is refused in one sentence naming the path, before anything is written. Each
image is converted to ``channels`` (1: grey, 3: RGB; transparent pixels on white), and
brought to ``image_size`` x ``image_size`` by a centre crop to a square and a Lanczos
resize (``predict`` does the same to new images). Normalisation: the training images'
channel statistics (``normalization='dataset'``) or ImageNet's (``'imagenet'``, for
models meant to take ImageNet-normalised input).

Decoding is done once, straight into ``.npy`` files in ``cache_dir`` (default
``~/.cache/practice_jax/folders``) named by a fingerprint of every file's path and bytes
and of the settings above, so a second run, or a run with another seed or model, maps
them in a fraction of a second; any changed, added or removed file makes a new cache
entry. The training images then live on the devices, or, with ``in_memory=False`` or when
they exceed a quarter of the machine's memory, stream from the memory-mapped cache
through grain (data/streaming.py) with the same exact resume. TFDS's ``ImageFolder`` is not used: it needs the split layout, decodes every
image through TensorFlow on every run, and does not resize images of different sizes to
one, which batching needs.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil

import ml_collections
import numpy as np

from practice_jax.data import splits
from practice_jax.data.base import Entry
from practice_jax.data.images import FITS, fit_image, read_image
from practice_jax.data.in_memory import ArraySource, ClassificationData, channel_stats
from practice_jax.errors import UserError

SPLIT_FOLDERS = {"train": ("train",), "validation": ("validation", "val"), "test": ("test",)}
NOT_IMAGES = frozenset({"thumbs.db", "desktop.ini"})
NORMALIZATIONS = ("dataset", "imagenet")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CACHE_VERSION = 2
STREAM_ABOVE = 0.25      # stream when the training images exceed this part of the memory


def _config(name: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = name
  c.path = ml_collections.config_dict.placeholder(str)    # the folder (required)
  c.image_size = 64              # images become image_size x image_size
  # How an image of another shape gets there: 'crop' (centre crop to a square, then
  # resized) or 'pad' (resized whole, keeping its aspect ratio, centred on black).
  c.fit = "crop"
  c.channels = 3                 # 1: grey, 3: RGB
  c.normalization = "dataset"    # 'dataset' (training images' statistics) or 'imagenet'
  # Without train/validation/test sub-folders: the seeded split of data/splits.py.
  c.validation_fraction = 0.1
  c.test_fraction = 0.1
  c.split_seed = 0
  c.cache_dir = ml_collections.config_dict.placeholder(str)   # None: ~/.cache/practice_jax/folders
  c.decode_threads = 8
  # True: the training images live on the devices (fast), unless they exceed a quarter of
  # the machine's memory; False: streamed from the memory-mapped cache through grain.
  c.in_memory = True
  c.stream_threads = 4
  c.stream_prefetch = 8
  return c


def _check(cfg: ml_collections.ConfigDict) -> str | None:
  if not cfg.path:
    return ("config.data.path is not set; give the folder of class sub-folders to train on "
            "(--config.data.path=FOLDER).")
  if not os.path.isdir(cfg.path):
    return f"config.data.path={cfg.path} is not a folder; give a folder of class sub-folders."
  if cfg.image_size < 8:
    return f"config.data.image_size={cfg.image_size} must be at least 8."
  if cfg.get("fit", "crop") not in FITS:
    return f"config.data.fit={cfg.fit!r} must be one of {', '.join(FITS)}."
  if cfg.channels not in (1, 3):
    return f"config.data.channels={cfg.channels} must be 1 (grey) or 3 (RGB)."
  if cfg.normalization not in NORMALIZATIONS:
    return (f"config.data.normalization={cfg.normalization!r} must be one of "
            f"{', '.join(NORMALIZATIONS)}.")
  if cfg.normalization == "imagenet" and cfg.channels != 3:
    return "config.data.normalization='imagenet' needs channels=3 (RGB)."
  if min(cfg.decode_threads, cfg.stream_threads, cfg.stream_prefetch) < 1:
    return ("config.data.decode_threads, stream_threads and stream_prefetch must be at "
            "least 1.")
  return splits.check_fractions(cfg)


# -- finding the files ------------------------------------------------------------------

def _visible(name: str) -> bool:
  return not name.startswith(".") and name.lower() not in NOT_IMAGES


def _subfolders(path: str) -> list[str]:
  return sorted(e.name for e in os.scandir(path) if e.is_dir() and _visible(e.name))


def _files_below(path: str) -> list[str]:
  found = []
  for root, dirs, files in os.walk(path):
    dirs[:] = sorted(d for d in dirs if _visible(d))
    found += [os.path.join(root, f) for f in sorted(files) if _visible(f)]
  return found


def _split_folders(path: str) -> dict[str, str]:
  """{split: folder} of a folder already split into train (and validation, test)."""
  subs = set(_subfolders(path))
  found = {}
  for split, names in SPLIT_FOLDERS.items():
    for name in names:
      if name in subs:
        found[split] = os.path.join(path, name)
        break
  return found if "train" in found else {}


def _classes(path: str, at_least: int = 2) -> dict[str, list[str]]:
  """{class name: its image files} of a folder of class folders, checked."""
  classes = _subfolders(path)
  if len(classes) < at_least:
    loose = [f for f in os.listdir(path) if os.path.isfile(os.path.join(path, f))]
    if not classes:
      hint = f" (it holds {len(loose)} loose files)" if loose else ""
      raise UserError(f"{path} has no class sub-folders{hint}; put each class's images in "
                      f"a sub-folder named after the class.")
    raise UserError(f"{path} has only one class folder ({classes[0]}); classification "
                    f"needs at least two.")
  out = {}
  for name in classes:
    files = _files_below(os.path.join(path, name))
    if not files:
      raise UserError(f"The class folder {os.path.join(path, name)} is empty; add its "
                      f"images or remove it.")
    out[name] = files
  return out


def find_images(path: str) -> tuple[list[str], dict[str, list[tuple[str, int]]]]:
  """(class names, {split: [(file, class index)]}) of the folder (splits as given)."""
  parts = _split_folders(path) or {"train": path}
  train = _classes(parts["train"])
  names = list(train)
  index = {name: i for i, name in enumerate(names)}
  found = {"train": [(f, index[c]) for c, files in train.items() for f in files]}
  for split in ("validation", "test"):
    if split not in parts:
      continue
    classes = _classes(parts[split], at_least=1)
    unknown = sorted(set(classes) - set(index))
    if unknown:
      raise UserError(f"{parts[split]} has class folder(s) {', '.join(unknown)} that "
                      f"{parts['train']} lacks; give every split the training classes.")
    found[split] = [(f, index[c]) for c, files in classes.items() for f in files]
  return names, found


# -- decoding, cached -------------------------------------------------------------------

def fingerprint(cfg, files: list[str]) -> str:
  """Of every file's path (relative to the folder) and bytes, and the decoding settings."""
  h = hashlib.blake2b(digest_size=16)
  settings = [CACHE_VERSION, cfg.image_size, cfg.channels]
  if cfg.get("fit", "crop") != "crop":      # older caches (crop) keep their keys
    settings.append(cfg.fit)
  h.update(json.dumps(settings).encode())
  for path in sorted(files):
    h.update(os.path.relpath(path, cfg.path).encode() + b"\0")
    with open(path, "rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
    h.update(b"\1")
  return h.hexdigest()


def _decode(path: str, size: int, channels: int, fit: str = "crop") -> np.ndarray:
  image = read_image(path, channels)
  if image.shape[:2] != (size, size):
    image = fit_image(image, size, size, fit)
  return image


def _decode_into(out: np.ndarray, files: list[str], cfg, done: int, total: int) -> int:
  """Decodes `files` into `out` (a memory-mapped array) with reader threads."""
  step = max(1, total // 20)
  with concurrent.futures.ThreadPoolExecutor(cfg.decode_threads) as pool:
    for i, image in enumerate(pool.map(
        lambda f: _decode(f, cfg.image_size, cfg.channels, cfg.get("fit", "crop")), files)):
      out[i] = image
      done += 1
      if total >= 2000 and done % step == 0:
        print(f"\r  decoded {done}/{total} images", end="", flush=True)
  return done


def _cache_path(cfg, key: str) -> str:
  root = os.path.expanduser(cfg.cache_dir or "~/.cache/practice_jax/folders")
  name = os.path.basename(os.path.normpath(os.path.abspath(cfg.path))) or "folder"
  return os.path.join(root, f"{name}-{key}")


def _open(cache: str, split_names) -> dict[str, dict[str, np.ndarray]]:
  """The cached splits, memory-mapped (nothing is read until used)."""
  return {s: {k: np.load(os.path.join(cache, f"{s}_{k}.npy"), mmap_mode="r")
              for k in ("image", "label")} for s in split_names}


def load(cfg) -> tuple[list[str], dict[str, dict[str, np.ndarray]], bool]:
  """(class names, {split: {'image', 'label'}} as found on disk, memory-mapped from the
  cache, whether the cache was there already). Splits not given as folders are not cut
  here. The images are decoded straight into the cache files, so a folder larger than
  memory is decoded without holding it."""
  names, found = find_images(cfg.path)
  files = [f for part in found.values() for f, _ in part]
  cache = _cache_path(cfg, fingerprint(cfg, files))
  try:
    return names, _open(cache, found), True
  except (OSError, ValueError):
    pass                          # absent (or damaged): decoded again below
  print(f"Decoding {len(files)} images of {cfg.path} (once; cached in "
        f"{os.path.dirname(cache)})...", flush=True)
  tmp = cache + f".tmp{os.getpid()}"
  os.makedirs(tmp, exist_ok=True)
  try:
    done = 0
    for split, part in found.items():
      shape = (len(part), cfg.image_size, cfg.image_size, cfg.channels)
      images = np.lib.format.open_memmap(os.path.join(tmp, f"{split}_image.npy"), "w+",
                                         np.uint8, shape)
      done = _decode_into(images, [f for f, _ in part], cfg, done, len(files))
      images.flush()
      del images
      np.save(os.path.join(tmp, f"{split}_label.npy"),
              np.asarray([c for _, c in part], np.int32))
    if len(files) >= 2000:
      print()
    shutil.rmtree(cache, ignore_errors=True)
    os.replace(tmp, cache)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)   # a refused image leaves nothing behind
    if not os.listdir(os.path.dirname(tmp)):
      os.rmdir(os.path.dirname(tmp))
    raise
  return names, _open(cache, found), False


def load_splits(cfg) -> tuple[list[str], dict[str, dict[str, np.ndarray]], dict]:
  """(class names, the cached splits (memory-mapped), {'train', 'validation', 'test'}:
  indices into them), with missing parts cut from train by the seeded split."""
  names, parts, _ = load(cfg)
  index = {s: (s, np.arange(len(p["label"]))) for s, p in parts.items()}
  missing = [s for s in ("validation", "test") if s not in parts]
  if missing:
    labels = np.asarray(parts["train"]["label"])
    idx = splits.seeded_split(
        labels, len(labels), cfg.validation_fraction if "validation" in missing else 0.0,
        cfg.test_fraction if "test" in missing else 0.0, cfg.split_seed, what=cfg.path)
    for s in ["train"] + missing:
      index[s] = ("train", idx[s])
  return names, parts, index


def read_splits(cfg) -> tuple[list[str], dict[str, dict[str, np.ndarray]]]:
  """(class names, {'train', 'validation', 'test'} read into memory)."""
  names, parts, index = load_splits(cfg)
  return names, {s: {k: np.asarray(v[idx]) for k, v in parts[where].items()}
                 for s, (where, idx) in index.items()}


class _Examples:
  """Rows `idx` of memory-mapped arrays, as a sequence of example dicts (for streaming)."""

  def __init__(self, arrays: dict[str, np.ndarray], idx: np.ndarray):
    self.arrays, self.idx = arrays, idx

  def __len__(self) -> int:
    return len(self.idx)

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    j = int(self.idx[i])
    return {k: np.asarray(v[j]) for k, v in self.arrays.items()}


def _memory_bytes() -> int:
  try:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (ValueError, OSError, AttributeError):
    return 0


def _info(names: list[str], image_shape, mean, std, normalization: str) -> dict:
  return {"class_names": names, "num_classes": len(names), "image_shape": list(image_shape),
          "mean": [float(m) for m in mean], "std": [float(s) for s in std],
          "normalization": normalization}


def _build(cfg: ml_collections.ConfigDict, seed: int):
  names, parts, index = load_splits(cfg)
  where, train_idx = index["train"]
  train_images = parts[where]["image"]
  size = len(train_idx) * int(np.prod(train_images.shape[1:]))
  stream = not cfg.in_memory or size > STREAM_ABOVE * _memory_bytes() > 0
  if cfg.in_memory and stream:
    print(f"The training images take {size / 2**30:.1f} GiB, over a quarter of this "
          f"machine's memory: streaming them from the cache instead.", flush=True)
  evals = {s: {k: np.asarray(v[idx]) for k, v in parts[w].items()}
           for s, (w, idx) in index.items() if s != "train" and len(idx)}
  if cfg.normalization == "imagenet":
    mean, std = IMAGENET_MEAN, IMAGENET_STD
  else:            # the training images' statistics (of at most 10,000 when streaming)
    sample = train_idx if not stream else train_idx[:10_000]
    mean, std = channel_stats(np.asarray(train_images[np.sort(sample)]))
    std = np.where(std > 0, std, 1.0)
  info = _info(names, train_images.shape[1:], mean, std, cfg.normalization)
  if stream:
    from practice_jax.data.streaming import StreamingSource
    return StreamingSource(_Examples(parts[where], train_idx), evals, info, seed,
                           cfg.stream_threads, cfg.stream_prefetch)
  train = {k: np.asarray(v[train_idx]) for k, v in parts[where].items()}
  return ArraySource(train, evals, info, seed)


def _from_info(cfg: ml_collections.ConfigDict, info: dict) -> ArraySource:
  return ArraySource(ClassificationData.from_metadata(info).train, {}, info, 0)


ENTRY = Entry("image", _config, _check, _build, _from_info)
