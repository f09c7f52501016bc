"""The one training loop: build, restore, train, evaluate, checkpoint, report.

It knows nothing about what is being learned: the task (see tasks/__init__.py) supplies
data, state, pure step functions, metric summaries and its report. The data order is a
function of the step (a permutation per (seed, epoch)), and checkpoints land on chunk
boundaries, so a run resumed from any checkpoint ends exactly where an uninterrupted one
would.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import shutil
import signal
import sys
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import optax

from practice_jax import optim, tasks
from practice_jax.checkpoint import Checkpointer
from practice_jax.config_base import base_config
from practice_jax.data.in_memory import epoch_permutation
from practice_jax.errors import UserError
from practice_jax.parallel import DataParallel, sync
from practice_jax.reporting import plots, records, writers
from practice_jax.signals import StopSignals
from practice_jax.reporting.progress import Progress, format_duration
from practice_jax.state import DATA_STREAM, stream_key
from practice_jax.validation import validate

CONFIG_FILE = "config.json"
LAST, BEST = "checkpoints", "best_checkpoint"


class TrainingDiverged(UserError):
  """The loss became NaN or infinite."""


class Preempted(Exception):
  """SIGTERM or SIGINT arrived; a checkpoint of the current step was saved."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.exit_code = 128 + signum


CONFIG_CHANGE_CHOICES = ("refuse", "continue", "restart")
# Keys that say where data lives, not what is trained: they may differ between machines.
# Keys that say how the work is laid out over devices: every layout trains the same
# trajectory (tests/test_parallel.py), so a run may continue on other hardware.
_PORTABLE_KEYS = ("data.data_dir", "data.manual_dir", "parallel.mode", "parallel.mesh_shape",
                  "parallel.fsdp_min_size")
# What a run writes in its workdir besides the task's own files (task.output_files()).
_RUN_OUTPUTS = (LAST, BEST, LAST + "_corrupt", writers.METRICS_FILE, "tensorboard",
                records.RUN_FILE, "learning_curves.png")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(_flatten(value, f"{prefix}{key}."))
    return out
  return {prefix[:-1]: tree}


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
  """'key: old -> new' for every key that differs (paths to data excepted)."""
  a, b = _flatten(old), _flatten(new)
  return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
          if k not in _PORTABLE_KEYS and a.get(k) != b.get(k)]


def _check_workdir(workdir: str, config: ml_collections.ConfigDict, on_config_change: str
                   ) -> list[str]:
  """Refuses an unwritable workdir, and mixing two configs in one unless told what to do;
  writes nothing."""
  existing = os.path.abspath(workdir)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing) or not os.access(existing, os.W_OK):
    reason = "is a file" if not os.path.isdir(existing) else "is not writable"
    raise UserError(f"Cannot write to the workdir {workdir} ({existing} {reason}); pass a "
                    f"writable folder with --workdir.")
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path) or not os.path.isdir(os.path.join(workdir, LAST)):
    return []
  with open(path, encoding="utf-8") as f:
    old = json.load(f)
  differences = config_differences(old, json.loads(config.to_json_best_effort()))
  if differences and on_config_change == "refuse":
    shown = "; ".join(differences[:5]) + (f"; and {len(differences) - 5} more"
                                          if len(differences) > 5 else "")
    raise UserError(
        f"{workdir} holds a run with a different config ({shown}); pass "
        f"--config_change=continue to go on from its checkpoint with the new config, "
        f"--config_change=restart to delete that run's checkpoints and results and start "
        f"over, or choose another --workdir.")
  return differences


def _delete_run(workdir: str) -> None:
  for name in _RUN_OUTPUTS + tuple(tasks.output_files()):
    target = os.path.join(workdir, name)
    if os.path.isdir(target):
      shutil.rmtree(target)
    elif os.path.exists(target):
      os.remove(target)


@dataclasses.dataclass
class EarlyStopping:
  """Tracks the best validation value; says when `patience` evaluations brought none.

  With patience 0 it only tracks the best value (for the best checkpoint) and never stops.
  """
  metric: str = "accuracy"
  patience: int = 0
  min_delta: float = 0.0
  best: float | None = None
  best_step: int | None = None
  bad_evaluations: int = 0
  stopped: bool = False

  def update(self, value: float, step: int) -> bool:
    """Records one evaluation; returns whether it is a new best."""
    sign = -1.0 if self.metric == "loss" else 1.0
    if self.best is None or sign * (value - self.best) > self.min_delta:
      self.best, self.best_step, self.bad_evaluations = value, step, 0
      return True
    self.bad_evaluations += 1
    self.stopped = 0 < self.patience <= self.bad_evaluations
    return False


def _add(a: dict[str, float] | None, b: dict[str, Any]) -> dict[str, float]:
  b = {k: float(v) for k, v in jax.device_get(b).items()}
  return b if a is None else {k: a[k] + b[k] for k in a}


def _prepare_workdir(workdir: str, config: ml_collections.ConfigDict) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, CONFIG_FILE), "w", encoding="utf-8") as f:
      f.write(config.to_json_best_effort(indent=2))
  except OSError as e:
    raise UserError(f"Cannot write to the workdir {workdir} ({e.strerror}); pass a "
                    f"writable folder with --workdir.") from None


@dataclasses.dataclass
class Experiment:
  """Everything built from a config, before any training."""
  config: ml_collections.ConfigDict
  parallel: DataParallel
  task: Any
  tx: Any
  schedule: Any
  steps_per_epoch: int
  total_steps: int


def build(config: ml_collections.ConfigDict, metadata: dict | None = None) -> Experiment:
  """The experiment of `config` with its data; given a checkpoint's task `metadata`, a
  data-free one for inference (its optimizer only gives the state its structure)."""
  validate(config, jax.device_count())
  parallel = DataParallel(mode=config.parallel.mode, mesh=tuple(config.parallel.mesh_shape),
                          fsdp_min_size=config.parallel.fsdp_min_size)
  task = tasks.build(config, metadata)
  if metadata is not None:
    tx = optim.build_optimizer(config.optimizer, optax.constant_schedule(1.0))
    return Experiment(config, parallel, task, tx, None, 1, 1)
  # Each process draws its share of every global batch from its own training examples.
  steps_per_epoch = task.num_train_examples // (config.batch_size // parallel.process_count)
  if steps_per_epoch == 0:
    raise UserError(f"config.batch_size={config.batch_size} is larger than the "
                    f"{task.num_train_examples * parallel.process_count} training examples; "
                    f"use a smaller batch.")
  total_steps = config.num_steps or max(1, int(round(config.num_epochs * steps_per_epoch)))
  schedule = optim.build_schedule(config.schedule, config.optimizer.learning_rate,
                                  total_steps, steps_per_epoch)
  tx = optim.build_optimizer(config.optimizer, schedule)
  return Experiment(config, parallel, task, tx, schedule, steps_per_epoch, total_steps)


def load_trained(workdir: str, which: str | None = None, with_data: bool = False):
  """(experiment, state, step, which) for the run in `workdir`: its 'best' or 'last'
  checkpoint (default: the one the run reported). Without `with_data` the task is built
  from the checkpoint's metadata alone (vocabulary, class names, input statistics)."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise UserError(f"{workdir} holds no practice_jax run (no {CONFIG_FILE}); pass the "
                    f"--workdir of a run started with python -m practice_jax.main.")
  with open(path, encoding="utf-8") as f:
    config = ml_collections.ConfigDict(json.load(f))
  # On this machine's devices, in the default layout (a checkpoint restores into any);
  # this also serves runs written before config.parallel existed.
  config.parallel = base_config().parallel
  which = which or config.evaluate_checkpoint
  directory = os.path.join(workdir, BEST if which == "best" else LAST)
  ckpt = Checkpointer(directory, 1, create=False) if os.path.isdir(directory) else None
  if ckpt is None or ckpt.latest_step() is None:
    raise UserError(f"{workdir} has no {which} checkpoint yet; train it first (or wait "
                    f"for its first checkpoint).")
  metadata = None if with_data else ckpt.read_meta().get("task")
  exp = build(config, metadata)
  state, _ = ckpt.restore(exp.parallel.put_state(exp.task.init_state(exp.tx)))
  return exp, state, ckpt.latest_step(), which


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       on_config_change: str = "refuse") -> dict[str, Any]:
  """Trains `config` in `workdir` (resuming if it holds checkpoints); returns the run
  record, whose 'final' entry has the metrics of the evaluated checkpoint.

  If the workdir holds a run of a different config, `on_config_change` says what to do:
  'refuse' (raise UserError listing the differences), 'continue' or 'restart'.
  """
  started, wall_start = records.now(), time.perf_counter()
  differences = _check_workdir(workdir, config, on_config_change)
  exp = build(config)                # loads the data: a data error leaves no trace
  sync("checked")                   # every process has read the workdir as it was
  if on_config_change == "restart" and os.path.isdir(os.path.join(workdir, LAST)):
    if exp.parallel.is_main:
      _delete_run(workdir)
    sync("restart")
    print(f"--config_change=restart: deleted the previous run in {workdir} "
          f"({len(differences)} config keys differed).")
  if exp.parallel.is_main:
    _prepare_workdir(workdir, config)
  sync("workdir")
  with StopSignals() as stop:
    return _train(exp, workdir, stop, started, wall_start)


def _train(exp: Experiment, workdir: str, stop: StopSignals, started: str,
           wall_start: float) -> dict[str, Any]:
  config = exp.config
  parallel, task, steps_per_epoch, total_steps = (
      exp.parallel, exp.task, exp.steps_per_epoch, exp.total_steps)

  state = parallel.put_state(task.init_state(exp.tx))
  ckpt = Checkpointer(os.path.join(workdir, LAST), config.keep_checkpoints)
  best_ckpt = Checkpointer(os.path.join(workdir, BEST), 1)
  stopper = EarlyStopping(config.early_stopping.metric, config.early_stopping.patience,
                          config.early_stopping.min_delta)
  window = epoch_sums = None
  if ckpt.latest_step() is not None:
    state, meta, warnings = ckpt.restore_latest_good(state)
    for warning in warnings:
      print(warning, file=sys.stderr)
    saved = meta.get("early_stopping", {})
    if saved.get("metric") == stopper.metric:   # progress carries over; settings are the config's
      stopper.best, stopper.best_step = saved["best"], saved["best_step"]
      stopper.bad_evaluations = saved["bad_evaluations"]
      stopper.stopped = 0 < stopper.patience <= stopper.bad_evaluations
    window, epoch_sums = meta.get("window"), meta.get("epoch_sums")
    if meta.get("process_count", 1) != parallel.process_count:
      # Each process draws from its own share of the data: other shares, other batches.
      print(f"warning: this run was checkpointed by {meta.get('process_count', 1)} "
            f"process(es) and continues with {parallel.process_count}; the data order from "
            f"here on differs from an uninterrupted run's.", file=sys.stderr)
    print(f"Resuming from the checkpoint at step {int(state.step)} in {ckpt.directory}.")
  step = int(state.step)
  if parallel.is_main:
    writers.truncate_metrics(workdir, step)   # records past the checkpoint are redone
  best_ckpt.delete_after(step)
  progress = Progress(total_steps, steps_per_epoch, start_step=step,
                      stream=None if parallel.is_main else open(os.devnull, "w"))
  n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state.params))
  progress.message(
      f"{config.model.name} ({n_params:,} parameters) on {config.data.name}: "
      f"{task.num_train_examples} training examples, {steps_per_epoch} steps/epoch, "
      f"{total_steps} steps, global batch {config.batch_size} on {parallel.num_devices} "
      f"{jax.default_backend()} device(s)"
      + (f" in {parallel.process_count} processes" if parallel.process_count > 1 else "")
      + f", {config.parallel.mode} mode.")

  train_data = parallel.put_local(task.train_data)
  eval_data = {name: parallel.replicate(split) for name, split in task.eval_splits.items()}
  train_chunk = parallel.compile_train_chunk(
      functools.partial(task.train_step, tx=exp.tx), task.train_batch, config.batch_size)
  evaluate = parallel.compile_eval(task.eval_step, config.eval_batch_size)
  data_key = stream_key(config.seed, DATA_STREAM)
  writer = writers.create_writer(workdir, active=parallel.is_main)

  perm_epoch, perm = None, None
  last_saved = ckpt.latest_step()
  while step < total_steps and not stopper.stopped:
    epoch, index = divmod(step, steps_per_epoch)
    if epoch != perm_epoch:
      perm_epoch = epoch
      perm = parallel.put_local(epoch_permutation(data_key, epoch, task.num_train_examples))
    k = config.steps_per_dispatch
    end_index = min((index // k + 1) * k, steps_per_epoch, index + total_steps - step)
    state, sums, params_finite = train_chunk(state, train_data, perm, index,
                                             num_steps=end_index - index)
    new_step = step + end_index - index
    sums = jax.device_get(sums)
    window, epoch_sums = _add(window, sums), _add(epoch_sums, sums)
    chunk = task.summarize(sums)
    if not (math.isfinite(chunk["loss"]) and bool(params_finite)):
      kept = (f"the last good checkpoint is step {last_saved} in {ckpt.directory} (kept)"
              if last_saved is not None else "no checkpoint was saved before")
      ckpt.close()                   # pending saves finish (in every process)
      best_ckpt.close()
      raise TrainingDiverged(
          f"Training diverged between steps {step} and {new_step} (loss {chunk['loss']}, "
          f"parameters {'finite' if bool(params_finite) else 'not finite'}); {kept}; lower "
          f"the learning rate or add gradient clipping (optimizer.grad_clip_norm).")
    progress.update(new_step, chunk)

    epoch_end = new_step % steps_per_epoch == 0 or new_step == total_steps
    if epoch_end or new_step // config.log_every_steps > step // config.log_every_steps:
      scalars = {f"train/{k}": v for k, v in task.summarize(window).items()}
      scalars["train/learning_rate"] = float(exp.schedule(new_step - 1))
      writer.write_scalars(new_step, scalars)
      window = None
    if config.eval_every_steps:
      evaluate_now = (new_step == total_steps or
                      new_step // config.eval_every_steps > step // config.eval_every_steps)
    else:
      evaluate_now = epoch_end
    if evaluate_now:
      line = (f"{_position(new_step, steps_per_epoch, config)} | train " +
              _format(task.summarize(epoch_sums)))
      epoch_sums = None
      if "validation" in eval_data:
        val = task.summarize(jax.device_get(evaluate(state, eval_data["validation"])))
        writer.write_scalars(new_step, {f"validation/{k}": v for k, v in val.items()})
        line += " | validation " + _format(val)
        task.on_evaluation(state, workdir, new_step)
        if stopper.update(val[stopper.metric], new_step):
          best_ckpt.save(new_step, state, {"validation": val, "task": task.metadata()})
          line += " *"
      progress.message(line)
      if stopper.stopped:
        progress.message(
            f"Early stopping: validation {stopper.metric} has not improved for "
            f"{stopper.patience} evaluations; the best was {stopper.best:.4f} at step "
            f"{stopper.best_step}.")
      writer.flush()
    signum = stop.agreed_signal(parallel.process_count)
    if (epoch_end or evaluate_now or stopper.stopped or signum is not None or
        new_step // config.checkpoint_every_steps > step // config.checkpoint_every_steps):
      ckpt.save(new_step, state, {"epoch": new_step / steps_per_epoch,
                                  "early_stopping": dataclasses.asdict(stopper),
                                  "window": window, "epoch_sums": epoch_sums,
                                  "task": task.metadata(),
                                  "process_count": parallel.process_count})
      last_saved = new_step
    step = new_step
    if signum is not None and step < total_steps:
      writer.close()
      ckpt.close()
      best_ckpt.close()
      name = signal.Signals(signum).name
      raise Preempted(f"Stopped by {name} at step {step} of {total_steps}; the checkpoint "
                      f"is saved in {ckpt.directory}. Re-run the same command to continue.",
                      signum)

  stop.release()   # from here on the run is complete: signals act normally
  used = "last"
  if config.evaluate_checkpoint == "best" and best_ckpt.latest_step() is not None:
    best_ckpt.wait()
    state, _ = best_ckpt.restore(state)
    used = "best"
  used_step = int(state.step)
  final = {name: task.summarize(jax.device_get(evaluate(state, split)))
           for name, split in eval_data.items()}
  writer.write_scalars(step, {f"test/{k}": v for k, v in final["test"].items()})
  writer.close()
  ckpt.close()
  best_ckpt.close()
  report = task.write_report(state, parallel, workdir)
  wall = time.perf_counter() - wall_start
  if not parallel.is_main:
    return {"final": final, "steps": step}
  if config.plots:
    plots.learning_curves(writers.read_metrics(workdir),
                          os.path.join(workdir, "learning_curves.png"),
                          title=f"{config.model.name} on {config.data.name}")
  record = {
      "config": config.to_dict(), "seed": config.seed, "workdir": os.path.abspath(workdir),
      "started": started, "finished": records.now(), "wall_time_s": round(wall, 2),
      "steps": step, "epochs": step / steps_per_epoch, "steps_per_epoch": steps_per_epoch,
      "early_stopped": stopper.stopped, "num_parameters": n_params, "final": final,
      "evaluated_checkpoint": {"which": used, "step": used_step},
      "environment": records.environment(),
  }
  records.write_run_record(workdir, record)
  progress.message(report["text"].rstrip())
  progress.message(
      f"test {_format(final['test'])} ({used} checkpoint, step {used_step}) | "
      f"{step / steps_per_epoch:g} epochs, this process {format_duration(wall)} | "
      f"results in {workdir}")
  return record


def _position(step: int, steps_per_epoch: int, config) -> str:
  if config.num_steps:
    return f"step {step:6d}"
  return f"epoch {step / steps_per_epoch:6.2f}"


def _format(metrics: dict[str, float]) -> str:
  return " ".join(f"{k} {v:.2%}" if k == "accuracy" else f"{k} {v:.4f}"
                  for k, v in metrics.items())
