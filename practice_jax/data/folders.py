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

Decoding is done once: the decoded arrays are cached in ``cache_dir`` (default
``~/.cache/practice_jax/folders``) under a fingerprint of every file's path and bytes
and of the settings above, so a second run, or a run with another seed or model, loads
them in a fraction of a second; any changed, added or removed file makes a new cache
entry. TFDS's ``ImageFolder`` is not used: it needs the split layout, decodes every
image through TensorFlow on every run, and does not resize images of different sizes to
one, which batching needs.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import sys

import ml_collections
import numpy as np

from practice_jax.data import splits
from practice_jax.data.base import Entry
from practice_jax.data.images import fit_colour, read_image
from practice_jax.data.in_memory import ArraySource, channel_stats
from practice_jax.errors import UserError

SPLIT_FOLDERS = {"train": ("train",), "validation": ("validation", "val"), "test": ("test",)}
NOT_IMAGES = frozenset({"thumbs.db", "desktop.ini"})
NORMALIZATIONS = ("dataset", "imagenet")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CACHE_VERSION = 1


def _config(name: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = name
  c.path = ml_collections.config_dict.placeholder(str)    # the folder (required)
  c.image_size = 64              # images become image_size x image_size
  c.channels = 3                 # 1: grey, 3: RGB
  c.normalization = "dataset"    # 'dataset' (training images' statistics) or 'imagenet'
  # Without train/validation/test sub-folders: the seeded split of data/splits.py.
  c.validation_fraction = 0.1
  c.test_fraction = 0.1
  c.split_seed = 0
  c.cache_dir = ml_collections.config_dict.placeholder(str)   # None: ~/.cache/practice_jax/folders
  c.decode_threads = 8
  return c


def _check(cfg: ml_collections.ConfigDict) -> str | None:
  if not cfg.path:
    return ("config.data.path is not set; give the folder of class sub-folders to train on "
            "(--config.data.path=FOLDER).")
  if not os.path.isdir(cfg.path):
    return f"config.data.path={cfg.path} is not a folder; give a folder of class sub-folders."
  if cfg.image_size < 8:
    return f"config.data.image_size={cfg.image_size} must be at least 8."
  if cfg.channels not in (1, 3):
    return f"config.data.channels={cfg.channels} must be 1 (grey) or 3 (RGB)."
  if cfg.normalization not in NORMALIZATIONS:
    return (f"config.data.normalization={cfg.normalization!r} must be one of "
            f"{', '.join(NORMALIZATIONS)}.")
  if cfg.normalization == "imagenet" and cfg.channels != 3:
    return "config.data.normalization='imagenet' needs channels=3 (RGB)."
  if cfg.decode_threads < 1:
    return f"config.data.decode_threads={cfg.decode_threads} must be at least 1."
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
  h.update(json.dumps([CACHE_VERSION, cfg.image_size, cfg.channels]).encode())
  for path in sorted(files):
    h.update(os.path.relpath(path, cfg.path).encode() + b"\0")
    with open(path, "rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
    h.update(b"\1")
  return h.hexdigest()


def _decode(path: str, size: int, channels: int) -> np.ndarray:
  image = read_image(path, channels)
  if image.shape[:2] != (size, size):
    image = fit_colour(image, size, size)
  return image


def _decode_all(files: list[str], cfg) -> np.ndarray:
  out = np.zeros((len(files), cfg.image_size, cfg.image_size, cfg.channels), np.uint8)
  if not files:
    return out
  step = max(1, len(files) // 20)
  with concurrent.futures.ThreadPoolExecutor(cfg.decode_threads) as pool:
    for i, image in enumerate(pool.map(
        lambda f: _decode(f, cfg.image_size, cfg.channels), files)):
      out[i] = image
      if len(files) >= 2000 and (i + 1) % step == 0:
        print(f"\r  decoded {i + 1}/{len(files)} images", end="", flush=True)
  if len(files) >= 2000:
    print()
  return out


def _cache_path(cfg, key: str) -> str:
  root = os.path.expanduser(cfg.cache_dir or "~/.cache/practice_jax/folders")
  name = os.path.basename(os.path.normpath(os.path.abspath(cfg.path))) or "folder"
  return os.path.join(root, f"{name}-{key}.npz")


def load(cfg) -> tuple[list[str], dict[str, dict[str, np.ndarray]], bool]:
  """(class names, {split: {'image', 'label'}} as found on disk, whether the cache was
  used). Splits not given as folders are not cut here."""
  names, found = find_images(cfg.path)
  files = [f for part in found.values() for f, _ in part]
  cache = _cache_path(cfg, fingerprint(cfg, files))
  if os.path.isfile(cache):
    try:
      with np.load(cache) as z:
        arrays = {k: z[k] for k in z.files}
      return names, {s: {"image": arrays[f"{s}_image"], "label": arrays[f"{s}_label"]}
                     for s in found}, True
    except (OSError, ValueError, KeyError):
      pass                          # a damaged cache entry is rebuilt below
  print(f"Decoding {len(files)} images of {cfg.path} (once; cached in "
        f"{os.path.dirname(cache)})...", flush=True)
  parts = {s: {"image": _decode_all([f for f, _ in part], cfg),
               "label": np.asarray([c for _, c in part], np.int32)}
           for s, part in found.items()}
  _write_cache(cache, parts)
  return names, parts, False


def _write_cache(path: str, parts: dict) -> None:
  """Atomically; a cache that cannot be written only costs the next run the decoding."""
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + f".tmp{os.getpid()}"
    with open(tmp, "wb") as f:
      np.savez(f, **{f"{s}_{k}": v for s, part in parts.items() for k, v in part.items()})
    os.replace(tmp, path)
  except OSError as e:
    print(f"warning: could not cache the decoded images in {path} ({e.strerror}); the "
          f"next run decodes them again.", file=sys.stderr)


def _take(part: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
  return {k: v[idx] for k, v in part.items()}


def load_splits(cfg) -> tuple[list[str], dict[str, dict[str, np.ndarray]]]:
  """(class names, {'train', 'validation', 'test'}) with missing parts cut from train."""
  names, parts, _ = load(cfg)
  missing = [s for s in ("validation", "test") if s not in parts]
  if missing:
    train = parts["train"]
    idx = splits.seeded_split(
        train["label"], len(train["label"]),
        cfg.validation_fraction if "validation" in missing else 0.0,
        cfg.test_fraction if "test" in missing else 0.0, cfg.split_seed, what=cfg.path)
    parts = {**parts, "train": _take(train, idx["train"])}
    for s in missing:
      parts[s] = _take(train, idx[s])
  return names, parts


def _info(names: list[str], image_shape, mean, std, normalization: str) -> dict:
  return {"class_names": names, "num_classes": len(names), "image_shape": list(image_shape),
          "mean": [float(m) for m in mean], "std": [float(s) for s in std],
          "normalization": normalization}


def _build(cfg: ml_collections.ConfigDict, seed: int) -> ArraySource:
  names, parts = load_splits(cfg)
  train = parts["train"]
  if cfg.normalization == "imagenet":
    mean, std = IMAGENET_MEAN, IMAGENET_STD
  else:
    mean, std = channel_stats(train["image"])
    std = np.where(std > 0, std, 1.0)
  evals = {s: parts[s] for s in ("validation", "test") if len(parts[s]["label"])}
  return ArraySource(train, evals, _info(names, train["image"].shape[1:], mean, std,
                                         cfg.normalization), seed)


def _from_info(cfg: ml_collections.ConfigDict, info: dict) -> ArraySource:
  empty = {"image": np.zeros((0, *info["image_shape"]), np.uint8),
           "label": np.zeros((0,), np.int32)}
  return ArraySource(empty, {}, info, 0)


ENTRY = Entry("image", _config, _check, _build, _from_info)
