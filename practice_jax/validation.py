"""Up-front config checks: each problem is one sentence, raised before anything is
loaded, compiled or written. Each part checks its own section (the task its own, the
models and optimizers it builds; the data source its own); this module holds what cuts
across them: the loop's keys and how the work fits the devices."""

from __future__ import annotations

import jax
import ml_collections

from practice_jax import data, parallel, tasks
from practice_jax.errors import UserError
from practice_jax.models.settings import one_of


def _check(condition: bool, message: str) -> None:
  if not condition:
    raise UserError(message)


def _choice(key: str, value: str, choices) -> None:
  problem = one_of(choices)(value)
  _check(problem is None, f"config.{key}={value!r} {problem}")


def monitored_metric(config: ml_collections.ConfigDict) -> str:
  """The 'evaluator/metric' that early stopping and the best checkpoint follow."""
  metric = config.early_stopping.metric or tasks.get(config.task.name).MONITOR
  return metric if "/" in metric else f"validation/{metric}"


def validate(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises UserError naming the first impossible or unknown setting in `config`."""
  if not isinstance(config.get("task"), ml_collections.ConfigDict):
    raise UserError("config.task is now a section: set config.task.name (and the task's "
                    "own keys under config.task).")
  problem = tasks.check_name(config.task.name)
  _check(problem is None, problem or "")
  task = tasks.get(config.task.name)
  from practice_jax import transfer
  for part in (data.check(config.data, task.DATA_KINDS), task.check(config),
               transfer.check(config, task)):
    _check(part is None, part or "")

  opt = config.optimizer
  for key, on in (("accumulate_steps", opt.get("accumulate_steps", 1) > 1),
                  ("ema_decay", opt.get("ema_decay", 0.0) > 0)):
    _check(not on or transfer.single_model(task),
           f"config.optimizer.{key} acts on the parameters of a single-model task; task "
           f"{config.task.name!r} keeps its models in a state of its own (leave it at its "
           f"default).")

  _check(config.num_epochs > 0 or config.num_steps > 0,
         f"config.num_epochs={config.num_epochs} must be positive.")
  _check(config.num_steps >= 0 and config.eval_every_steps >= 0,
         "config.num_steps and config.eval_every_steps must be >= 0.")
  _check(config.num_steps > 0 or data.kind(config.data.name) != "none",
         f"Dataset {config.data.name!r} has no epochs; give config.num_steps.")
  _check(config.num_steps > 0 or config.schedule.warmup_epochs < config.num_epochs,
         f"config.schedule.warmup_epochs={config.schedule.warmup_epochs} must be below "
         f"num_epochs={config.num_epochs}.")

  par = config.parallel
  _choice("parallel.mode", par.mode, parallel.MODES)
  mesh = tuple(par.mesh_shape)
  _check(len(mesh) == 2 and parallel.mesh_shape(mesh, num_devices) is not None,
         f"config.parallel.mesh_shape={mesh} does not fit the {num_devices} devices; give "
         f"(data, fsdp) whose product is {num_devices}, one of them may be -1 (the rest).")
  _check(par.mode == "jit" or parallel.mesh_shape(mesh, num_devices)[1] == 1,
         "config.parallel.mode='pmap' replicates the state on every device; shard it with "
         "mode='jit' and mesh_shape=(-1, N), or set mesh_shape=(-1, 1).")
  _check(par.mode == "jit" or data.kind(config.data.name) != "none",
         f"config.parallel.mode='pmap' maps batches over the devices, and "
         f"{config.task.name!r} makes its own data inside the step; use mode='jit' (the "
         f"default).")
  _check(par.mode == "jit" or jax.process_count() == 1,
         "config.parallel.mode='pmap' runs in one process; use mode='jit' (the default) "
         "for multi-process runs.")
  _check(par.mode == "jit" or config.schedule.get("plateau_factor", 1.0) == 1.0,
         "config.schedule.plateau_factor (reduce on plateau) runs in mode='jit' (the "
         "default); set config.parallel.mode='jit' or plateau_factor=1.0.")
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

  from practice_jax import ledger     # the config's target names metrics the task reports
  problem = ledger.check_target(config)
  _check(problem is None, problem or "")

  es = config.early_stopping
  evaluator, _, metric = monitored_metric(config).partition("/")
  _choice("early_stopping.metric", metric, task.METRICS)
  _check(es.patience >= 0, f"config.early_stopping.patience={es.patience} must be >= 0.")
  _choice("evaluate_checkpoint", config.evaluate_checkpoint, ("last", "best"))
  has_validation = (config.data.get("validation_size", 1) > 0 and
                    (config.data.get("validation_fraction", 1) > 0 or
                     bool(config.data.get("validation_path"))))
  _check(has_validation or evaluator != "validation" or
         (es.patience == 0 and config.evaluate_checkpoint == "last"),
         "Early stopping and evaluate_checkpoint='best' need a validation split; set "
         "config.data.validation_size (or validation_fraction) above 0.")
