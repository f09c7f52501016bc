"""Flax Linen models, registered by name.

A new model is one file in this package plus one line in ``_REGISTRY``. Each model is a
Linen module whose dataclass fields are the keys allowed under ``config.model`` (besides
``name``, and the data-given ``num_classes``/``block_size``/``vocab_size``); its
``__call__(x, train)`` returns logits. It declares what each setting accepts in
``SETTINGS`` (rules from ``settings.py``; ``check_settings`` for rules across settings),
so a bad value is refused before any data is loaded, and sets ``CPU_UNROLL = True`` if
it convolves (see ``parallel.py``: XLA:CPU runs convolutions slowly inside loops). This
package imports no other part of practice_jax.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn

from practice_jax.models import groups, precision
from practice_jax.models import settings as settings_lib
from practice_jax.models.actor_critic import ActorCritic
from practice_jax.models.autoencoder import ConvAutoencoder
from practice_jax.models.classic import NiN, VGG, AlexNet, Inception
from practice_jax.models.cnn import CNN
from practice_jax.models.encoder import BERT
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
    "vgg": VGG,
    "nin": NiN,
    "inception": Inception,
    "alexnet": AlexNet,
    "rnn_lm": RNNLanguageModel,
    "gpt": GPT,
    "actor_critic": ActorCritic,
    "bert": BERT,
    "conv_autoencoder": ConvAutoencoder,
}

# Settings that come from the data, not from config.model.
DATA_SETTINGS = ("num_classes", "block_size", "vocab_size")
# config.model keys every registered model accepts besides its own fields, with their
# defaults: mixed precision (precision.py) and batch groups (groups.py).
COMMON = {**precision.DEFAULTS, "batch_groups": 1}


def names() -> list[str]:
  return sorted(_REGISTRY)


def hyperparameters(name: str) -> list[str]:
  """The config.model keys the named model accepts (its dataclass fields; the number of
  classes comes from the dataset)."""
  cls = _REGISTRY[name]
  return [f.name for f in dataclasses.fields(cls)
          if f.init and f.name not in ("parent", "name") + DATA_SETTINGS
          ] + list(COMMON)


def defaults(name: str) -> dict:
  """The named model's settings and their default values (with the settings every model
  has: COMMON)."""
  fields = {f.name: f for f in dataclasses.fields(_REGISTRY[name])}
  return {k: COMMON[k] if k in COMMON else fields[k].default for k in hyperparameters(name)}


def check(cfg) -> str | None:
  """The first problem with a config.model section, as one sentence, or None."""
  if cfg.name not in _REGISTRY:
    hint = settings_lib.did_you_mean(cfg.name, names())
    return (f"Unknown model (config.model.name) {cfg.name!r}: {hint}choose one of "
            f"{', '.join(names())}.")
  cls, allowed = _REGISTRY[cfg.name], hyperparameters(cfg.name)
  values = {k: v for k, v in cfg.items() if k != "name"}
  for key in values:
    if key not in allowed:
      hint = settings_lib.did_you_mean(key, allowed)
      return (f"Model {cfg.name!r} has no setting config.model.{key}: {hint}its settings "
              f"are {', '.join(allowed)}.")
  problem = (precision.check(values) or
             settings_lib.check(values, {"batch_groups": settings_lib.positive,
                                         **getattr(cls, "SETTINGS", {})}))
  if problem is None and hasattr(cls, "check_settings"):
    problem = cls.check_settings({**defaults(cfg.name), **values})
  return problem


def unrolled_on_cpu(name: str) -> bool:
  """Whether the model's train steps should be unrolled rather than scanned on CPU."""
  return getattr(_REGISTRY[name], "CPU_UNROLL", False)


def construct(cls: type[nn.Module], **kwargs):
  """`cls(**kwargs)` under the mixed-precision policy that kwargs' dtype, param_dtype and
  matmul_dtype ask for, its apply split into kwargs' batch_groups (the module itself for
  float32 and one group, as by default)."""
  dtypes = {k: kwargs.pop(k) for k in precision.DEFAULTS if k in kwargs}
  batch_groups = kwargs.pop("batch_groups", 1)
  return groups.wrap(precision.wrap(cls(**kwargs), **dtypes), batch_groups)


def build(name: str, num_classes: int, block_size: int | None = None, **kwargs):
  """Model `name` with its config settings; `block_size` is passed to models that take it.
  With config.model.dtype, param_dtype or matmul_dtype other than float32, the module
  under the mixed-precision policy (precision.py: same init/apply and parameter paths);
  with batch_groups > 1, its apply split over the batch (groups.py)."""
  cls = _REGISTRY[name]
  if block_size is not None and "block_size" in {f.name for f in dataclasses.fields(cls)}:
    kwargs["block_size"] = block_size
  return construct(cls, num_classes=num_classes, **kwargs)
