"""Flax Linen models, registered by name.

A new model is one file in this package plus one line in ``_REGISTRY``. Each model is a
Linen module whose dataclass fields are the keys allowed under ``config.model`` (besides
``name``, and the data-given ``num_classes``/``block_size``); its ``__call__(x, train)``
returns logits.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn

from practice_jax.models.cnn import CNN
from practice_jax.models.gpt import GPT
from practice_jax.models.lenet import LeNet5
from practice_jax.models.mlp import MLP
from practice_jax.models.resnet import ResNet
from practice_jax.models.rnn import RNNLanguageModel

_REGISTRY: dict[str, type[nn.Module]] = {
    "mlp": MLP,
    "cnn": CNN,
    "lenet5": LeNet5,
    "resnet": ResNet,
    "rnn_lm": RNNLanguageModel,
    "gpt": GPT,
}

# Settings that come from the data or the run (pmap's axis), not from config.model.
DATA_SETTINGS = ("num_classes", "block_size", "axis_name")


def names() -> list[str]:
  return sorted(_REGISTRY)


def hyperparameters(name: str) -> list[str]:
  """The config.model keys the named model accepts (its dataclass fields; the number of
  classes comes from the dataset)."""
  cls = _REGISTRY[name]
  return [f.name for f in dataclasses.fields(cls)
          if f.init and f.name not in ("parent", "name") + DATA_SETTINGS]


def defaults(name: str) -> dict:
  """The named model's settings and their default values."""
  fields = {f.name: f for f in dataclasses.fields(_REGISTRY[name])}
  return {k: fields[k].default for k in hyperparameters(name)}


def build(name: str, num_classes: int, block_size: int | None = None,
          axis_name: str | None = None, **kwargs) -> nn.Module:
  """Model `name` with its config settings; `block_size` is passed to models that take
  it, and `axis_name` (pmap mode: batch norm statistics and dropout masks over all
  devices) to every model."""
  cls = _REGISTRY[name]
  fields = {f.name for f in dataclasses.fields(cls)}
  if block_size is not None and "block_size" in fields:
    kwargs["block_size"] = block_size
  if axis_name is not None and "axis_name" in fields:
    kwargs["axis_name"] = axis_name
  return cls(num_classes=num_classes, **kwargs)
