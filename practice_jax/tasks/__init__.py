"""Kinds of experiment, registered by ``config.task.name`` (see base.py for the protocol).

A new kind of experiment is one file in this package plus one ``register`` line (tests
register their own: tests/seam_tasks.py).
"""

from __future__ import annotations

import ml_collections

from practice_jax.models.settings import did_you_mean

from practice_jax.tasks.autoencoder import DenoisingAutoencoderTask
from practice_jax.tasks.base import Task
from practice_jax.tasks.classification import ClassificationTask
from practice_jax.tasks.distillation import DistillationTask
from practice_jax.tasks.generative import GANTask, VAETask
from practice_jax.tasks.language_model import LanguageModelTask
from practice_jax.tasks.masked_lm import MaskedLMTask
from practice_jax.tasks.quantization_aware import QuantizationAwareTask
from practice_jax.tasks.rl import PPOTask
from practice_jax.tasks.tabular import RegressionTask, TableClassificationTask
from practice_jax.tasks.token_classification import TokenClassificationTask

_REGISTRY: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
  """Adds a task class under its config's name (usable as a class decorator)."""
  _REGISTRY[cls.config().name] = cls
  return cls


register(ClassificationTask)
register(DistillationTask)
register(LanguageModelTask)
register(VAETask)
register(GANTask)
register(PPOTask)
register(TableClassificationTask)
register(RegressionTask)
register(MaskedLMTask)
register(TokenClassificationTask)
register(DenoisingAutoencoderTask)
register(QuantizationAwareTask)


def names() -> list[str]:
  return sorted(_REGISTRY)


def get(name: str) -> type[Task]:
  return _REGISTRY[name]


def task_config(name: str, **settings) -> ml_collections.ConfigDict:
  """config.task for task `name`: its keys with their defaults, updated with `settings`."""
  cfg = _REGISTRY[name].config()
  cfg.update(settings)
  return cfg


def check_name(name: str) -> str | None:
  if name in _REGISTRY:
    return None
  hint = did_you_mean(name, names())
  return f"Unknown task (config.task.name) {name!r}: {hint}choose one of {', '.join(names())}."


def output_files() -> list[str]:
  """Every file or folder any task writes in a workdir (what a restart deletes)."""
  return sorted({name for task in _REGISTRY.values() for name in task.OUTPUTS})
