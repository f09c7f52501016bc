"""Up-front config checks: each problem is one sentence, raised before anything compiles."""

from __future__ import annotations

import difflib
import re

import jax
import ml_collections

from practice_jax import models, optim, parallel, tasks
from practice_jax.models import cnn, conv
from practice_jax.data import catalogue
from practice_jax.errors import UserError

def _closest(value: str, choices: list[str]) -> str:
  match = difflib.get_close_matches(value, choices, n=1)
  return f"did you mean {match[0]!r}? " if match else ""


def _check_name(key: str, value: str, choices) -> None:
  choices = list(choices)
  if value not in choices:
    raise UserError(f"Unknown {key} {value!r}: {_closest(value, choices)}"
                    f"choose one of {', '.join(choices)}.")


def _check(condition: bool, message: str) -> None:
  if not condition:
    raise UserError(message)


def validate(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises UserError naming the first impossible or unknown setting in `config`."""
  _check_name("task", config.task, tasks.names())
  _check(config.num_epochs > 0 or config.num_steps > 0,
         f"config.num_epochs={config.num_epochs} must be positive.")
  _check(config.num_steps >= 0 and config.eval_every_steps >= 0,
         "config.num_steps and config.eval_every_steps must be >= 0.")
  _check_name(f"dataset for task {config.task!r} (config.data.name)", config.data.name,
              catalogue.names(tasks.DATA_KIND[config.task]))
  _check_name("model (config.model.name)", config.model.name, models.names())
  allowed = models.hyperparameters(config.model.name)
  for key in config.model:
    if key != "name" and key not in allowed:
      raise UserError(f"Model {config.model.name!r} has no setting config.model.{key}: "
                      f"{_closest(key, allowed)}its settings are {', '.join(allowed)}.")
    if "dropout" in key:
      _check(0.0 <= config.model[key] < 1.0,
             f"config.model.{key}={config.model[key]} must be in [0, 1).")
  if "conv_impl" in config.model:
    _check_name("convolution lowering (config.model.conv_impl)", config.model.conv_impl,
                conv.CONV_IMPLS)
  pools = config.model.get("pools")
  if pools is not None:
    for p in pools:
      _check_name("pool in config.model.pools", p, cnn.POOLS)
    features = config.model.get("features", ())
    _check(len(pools) == len(features),
           f"config.model.pools has {len(pools)} entries but config.model.features has "
           f"{len(features)}; give one pool per conv stage.")

  opt = config.optimizer
  _check_name("optimizer (config.optimizer.name)", opt.name, optim.OPTIMIZERS)
  _check(opt.learning_rate > 0,
         f"config.optimizer.learning_rate={opt.learning_rate} must be positive.")
  _check(0.0 <= opt.momentum < 1.0, f"config.optimizer.momentum={opt.momentum} must be in [0, 1).")
  for key in ("weight_decay", "l1", "l2", "grad_clip_norm"):
    _check(opt[key] >= 0, f"config.optimizer.{key}={opt[key]} must be >= 0.")
  _check(not (opt.name == "adam" and opt.weight_decay),
         "Optimizer 'adam' does not decay weights; use optimizer.name='adamw' for decoupled "
         "weight decay or optimizer.l2 for an L2 penalty.")
  try:
    re.compile(opt.no_decay)
  except re.error as e:
    raise UserError(f"config.optimizer.no_decay={opt.no_decay!r} is not a valid regular "
                    f"expression ({e}).") from None

  sched = config.schedule
  _check_name("schedule (config.schedule.name)", sched.name, optim.SCHEDULES)
  _check(sched.warmup_epochs >= 0 and sched.warmup_steps >= 0,
         "config.schedule.warmup_epochs and warmup_steps must be >= 0.")
  _check(config.num_steps > 0 or sched.warmup_epochs < config.num_epochs,
         f"config.schedule.warmup_epochs={sched.warmup_epochs} must be below "
         f"num_epochs={config.num_epochs}.")
  _check(all(0 < f < 1 for f in sched.step_fractions),
         f"config.schedule.step_fractions={tuple(sched.step_fractions)} must be fractions of "
         f"training in (0, 1).")

  par = config.parallel
  _check_name("parallel mode (config.parallel.mode)", par.mode, parallel.MODES)
  mesh = tuple(par.mesh_shape)
  _check(len(mesh) == 2 and parallel.mesh_shape(mesh, num_devices) is not None,
         f"config.parallel.mesh_shape={mesh} does not fit the {num_devices} devices; give "
         f"(data, fsdp) whose product is {num_devices}, one of them may be -1 (the rest).")
  _check(par.mode == "jit" or parallel.mesh_shape(mesh, num_devices)[1] == 1,
         "config.parallel.mode='pmap' replicates the state on every device; shard it with "
         "mode='jit' and mesh_shape=(-1, N), or set mesh_shape=(-1, 1).")
  _check(par.mode == "jit" or jax.process_count() == 1,
         "config.parallel.mode='pmap' runs in one process; use mode='jit' (the default) "
         "for multi-process runs.")
  _check(par.fsdp_min_size >= 0,
         f"config.parallel.fsdp_min_size={par.fsdp_min_size} must be >= 0.")
  for key in ("batch_size", "eval_batch_size"):
    _check(config[key] > 0, f"config.{key}={config[key]} must be positive.")
    _check(config[key] % num_devices == 0,
           f"config.{key}={config[key]} is the global batch and must divide evenly over "
           f"the {num_devices} devices; use a multiple of {num_devices}.")
  for key in ("steps_per_dispatch", "log_every_steps", "checkpoint_every_steps",
              "keep_checkpoints"):
    _check(config[key] >= 1, f"config.{key}={config[key]} must be at least 1.")
  _check(config.data.validation_size >= 0,
         f"config.data.validation_size={config.data.validation_size} must be >= 0.")
  _check(0.0 <= config.label_smoothing < 1.0,
         f"config.label_smoothing={config.label_smoothing} must be in [0, 1).")
  es = config.early_stopping
  _check_name("early stopping metric (config.early_stopping.metric)", es.metric,
              ("accuracy", "loss"))
  _check(es.patience >= 0, f"config.early_stopping.patience={es.patience} must be >= 0.")
  _check_name("checkpoint to evaluate (config.evaluate_checkpoint)",
              config.evaluate_checkpoint, ("last", "best"))
  _check(config.task != "classification" or config.data.validation_size > 0 or
         (es.patience == 0 and config.evaluate_checkpoint == "last"),
         "Early stopping and evaluate_checkpoint='best' need a validation split; set "
         "config.data.validation_size above 0.")
  _check(config.augment.crop_padding >= 0,
         f"config.augment.crop_padding={config.augment.crop_padding} must be >= 0.")
  if config.model.name == "gpt":
    _check(config.model.embed_dim % config.model.num_heads == 0,
           f"config.model.embed_dim={config.model.embed_dim} must be divisible by "
           f"num_heads={config.model.num_heads}.")
  if config.task == "language_model":
    _check(config.data.block_size >= 1 and config.data.eval_windows >= 0,
           "config.data.block_size must be at least 1 and data.eval_windows >= 0.")
    _check(config.sampling.top_k >= 0 and config.sampling.length >= 1,
           "config.sampling.top_k must be >= 0 and sampling.length at least 1.")
    _check(config.sampling.temperature > 0,
           f"config.sampling.temperature={config.sampling.temperature} must be positive.")
