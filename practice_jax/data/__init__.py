"""Data sources, registered by ``config.data.name``.

A source gives the loop batches and the task what it needs to know about the data:

  source.info                  JSON the task and inference need (class names, channel
                               statistics, vocabulary); stored with every checkpoint
  source.element_spec          {name: jax.ShapeDtypeStruct} of one training example
  source.num_train_examples    this process's share of one epoch (0: no dataset)
  source.steps_per_epoch(b)    steps per epoch at local batch b; None if the data has none
  source.bind(parallel)        puts what lives on the devices there (once, before training)
  source.batches(step, n, b)   the local batches of steps step..step+n-1: a pytree of
                               arrays [n, b, ...] (numpy, or device arrays), a pure
                               function of (seed, step), so the position to checkpoint is
                               the step itself and a resumed run sees the same batches
  source.eval_splits           {name: {field: numpy array}} for evaluators (unpadded)

Kinds: device-resident arrays for data that fits in memory (in_memory.py, the fast path:
batches are gathered on the device, nothing crosses the host between steps), windows of a
text (text.py), streaming through grain for data larger than memory (streaming.py), and no
data at all (generated.py: the task makes its data inside the step). A new kind of data
is one file here plus one entry in ``_REGISTRY``; each entry also says what
``config.data`` holds for it (``config()``) and checks it (``check()``).
"""

from __future__ import annotations

import ml_collections

from practice_jax.data import catalogue, folders, generated, in_memory, tables, text
from practice_jax.data.base import Entry, Source
from practice_jax.models.settings import did_you_mean


_REGISTRY: dict[str, Entry] = {}


def register(name: str, entry: Entry) -> None:
  _REGISTRY[name] = entry


for _name, _spec in catalogue.CATALOGUE.items():
  register(_name, in_memory.ENTRY if _spec.kind == "image" else text.ENTRY)
register("none", generated.ENTRY)
register("csv", tables.ENTRY)
register("image_folder", folders.ENTRY)


def names(kind: str | None = None) -> list[str]:
  return sorted(k for k, v in _REGISTRY.items() if kind is None or v.kind == kind)


def kind(name: str) -> str:
  return _REGISTRY[name].kind


def data_config(name: str, **settings) -> ml_collections.ConfigDict:
  """config.data for dataset `name`: its keys with their defaults, updated with
  `settings`."""
  cfg = _REGISTRY[name].config(name)
  unknown = sorted(set(settings) - set(cfg))
  if unknown:
    raise ValueError(f"data {name!r} has no settings {unknown}; it has {sorted(cfg)}")
  cfg.update(settings)
  return cfg


def check(cfg: ml_collections.ConfigDict, kinds: tuple[str, ...]) -> str | None:
  """The first problem with a config.data section for a task taking `kinds` of data."""
  choices = names()
  if cfg.name not in _REGISTRY or _REGISTRY[cfg.name].kind not in kinds:
    fitting = [n for n in choices if _REGISTRY[n].kind in kinds]
    hint = did_you_mean(cfg.name, fitting)
    return (f"Unknown dataset (config.data.name) {cfg.name!r} for this task: {hint}"
            f"choose one of {', '.join(fitting)}.")
  allowed = set(_REGISTRY[cfg.name].config(cfg.name))
  for key in cfg:
    if key not in allowed:
      hint = did_you_mean(key, sorted(allowed))
      return (f"Dataset {cfg.name!r} has no setting config.data.{key}: {hint}its settings "
              f"are {', '.join(sorted(allowed))}.")
  return _REGISTRY[cfg.name].check(cfg)


def build(cfg: ml_collections.ConfigDict, seed: int, info: dict | None = None) -> Source:
  """The source of `cfg` (loads the data); with a checkpoint's `info`, a data-free one
  for inference."""
  entry = _REGISTRY[cfg.name]
  return entry.from_info(cfg, info) if info is not None else entry.build(cfg, seed)
