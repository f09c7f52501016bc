"""The one training loop: build, restore, train, evaluate, checkpoint, report.

It knows no task, metric, split or data kind: the task (tasks/base.py) supplies the state,
the pure step, evaluators, metric directions and artifacts; the source (data/) supplies
batches as a pure function of (seed, step). Periodic actions (log, evaluate, best
checkpoint and early stopping, checkpoint, divergence guard, preemption, progress) share
one rule, `_itstime`. Checkpoints land on chunk boundaries, so a run resumed from any
checkpoint ends exactly where an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import sys
import time
from typing import Any

import jax
import ml_collections

from practice_jax import data, flops, optim, signals, tasks, transfer, workdir as workdir_lib
from practice_jax.checkpoint import Checkpointer
from practice_jax.errors import UserError
from practice_jax.parallel import DataParallel, sync
from practice_jax.reporting import plots, records, writers
from practice_jax.reporting.artifacts import Artifacts
from practice_jax.reporting.progress import Progress, format_duration, format_metrics
from practice_jax.signals import StopSignals
from practice_jax.validation import monitored_metric, validate

LAST, BEST = workdir_lib.LAST, workdir_lib.BEST


class TrainingDiverged(UserError):
  """A metric or the state became NaN or infinite."""


class Preempted(Exception):
  """SIGTERM or SIGINT arrived; a checkpoint of the current step was saved."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.exit_code = 128 + signum


@dataclasses.dataclass
class EarlyStopping:
  """Tracks the best value of the monitored metric; says when `patience` evaluations
  brought none. With patience 0 it only tracks the best (for the best checkpoint)."""
  metric: str
  higher_is_better: bool = True
  patience: int = 0
  min_delta: float = 0.0
  best: float | None = None
  best_step: int | None = None
  bad_evaluations: int = 0
  stopped: bool = False

  def resume(self, saved: dict | None) -> None:
    """Takes over the progress checkpointed as `dataclasses.asdict` of a tracker of the
    same metric (progress carries over; the settings are the config's)."""
    if saved and saved.get("metric") == self.metric:
      self.best, self.best_step = saved["best"], saved["best_step"]
      self.bad_evaluations = saved["bad_evaluations"]
      self.stopped = 0 < self.patience <= self.bad_evaluations

  def update(self, value: float, step: int) -> bool:
    """Records one evaluation; returns whether it is a new best."""
    sign = 1.0 if self.higher_is_better else -1.0
    if self.best is None or sign * (value - self.best) > self.min_delta:
      self.best, self.best_step, self.bad_evaluations = value, step, 0
      return True
    self.bad_evaluations += 1
    self.stopped = 0 < self.patience <= self.bad_evaluations
    return False


@dataclasses.dataclass
class Experiment:
  """Everything built from a config, before any training."""
  config: ml_collections.ConfigDict
  parallel: DataParallel
  source: Any
  task: Any
  plan: optim.Plan

  @property
  def local_batch(self) -> int:
    return self.config.batch_size // self.parallel.process_count


def build(config: ml_collections.ConfigDict, info: dict | None = None) -> Experiment:
  """The experiment of `config` with its data; given a checkpoint's data `info`, a
  data-free one for inference (its optimizer only gives the state its structure)."""
  validate(config, jax.device_count())
  parallel = DataParallel(mode=config.parallel.mode, mesh=tuple(config.parallel.mesh_shape),
                          fsdp_min_size=config.parallel.fsdp_min_size)
  source = data.build(config.data, config.seed, info)
  task = tasks.get(config.task.name)(config, source, parallel)
  if info is not None:
    return Experiment(config, parallel, source, task, optim.Plan(1, 1))
  # Each process draws its share of every global batch from its own training examples.
  steps_per_epoch = source.steps_per_epoch(config.batch_size // parallel.process_count)
  if steps_per_epoch == 0:
    raise UserError(f"config.batch_size={config.batch_size} is larger than the "
                    f"{source.num_train_examples * parallel.process_count} training "
                    f"examples; use a smaller batch.")
  total = config.num_steps or max(1, int(round(config.num_epochs * steps_per_epoch)))
  return Experiment(config, parallel, source, task, optim.Plan(total, steps_per_epoch))


def load_trained(workdir: str, which: str | None = None, with_data: bool = False):
  """(experiment, state, step, which) for the run in `workdir`: its 'best' or 'last'
  checkpoint (default: the one the run reported). Without `with_data` the task is built
  from the checkpoint's metadata alone (vocabulary, class names, input statistics)."""
  config = workdir_lib.load_config(workdir)
  which = which or config.evaluate_checkpoint
  directory = os.path.join(workdir, BEST if which == "best" else LAST)
  ckpt = Checkpointer(directory, 1, create=False) if os.path.isdir(directory) else None
  if ckpt is None or ckpt.latest_step() is None:
    raise UserError(f"{workdir} has no {which} checkpoint yet; train it first (or wait "
                    f"for its first checkpoint).")
  exp = build(config, None if with_data else ckpt.read_meta().get("task"))
  state, _ = ckpt.restore(exp.parallel.put_state(exp.task.init_state(exp.plan)))
  state = optim.evaluated_weights(config.optimizer, state)[0][1]   # what it reported
  return exp, state, ckpt.latest_step(), which


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       on_config_change: str = "refuse") -> dict[str, Any]:
  """Trains `config` in `workdir` (resuming if it holds checkpoints); returns the run
  record, whose 'final' entry has every evaluator's metrics on the evaluated checkpoint.

  If the workdir holds a run of a different config, `on_config_change` says what to do:
  'refuse' (raise UserError listing the differences), 'continue' or 'restart'.
  """
  started, wall_start = records.now(), time.perf_counter()
  differences = workdir_lib.check(workdir, config, on_config_change)
  if jax.process_index() == 0:
    print(f"Loading {config.data.name}...", flush=True)
  exp = build(config)                # loads the data: a data error leaves no trace
  signum = signals.pending()
  if signum is not None and exp.parallel.process_count == 1:
    raise Preempted(f"Stopped by {signal.Signals(signum).name} while starting up: nothing "
                    f"was trained or written in {workdir}. Run the same command again to "
                    f"start.", signum)
  lock = workdir_lib.WorkdirLock(workdir)
  if exp.parallel.is_main:           # one run per workdir (process 0 holds it for all)
    os.makedirs(workdir, exist_ok=True)
    note = lock.acquire()
    if note:
      print(note, file=sys.stderr)
  try:
    sync("checked")                   # every process has read the workdir as it was
    if on_config_change == "restart" and os.path.isdir(os.path.join(workdir, LAST)):
      if exp.parallel.is_main:
        workdir_lib.delete_run(workdir)
      sync("restart")
      print(f"--config_change=restart: deleted the previous run in {workdir} "
            f"({len(differences)} config keys differed).")
    if exp.parallel.is_main:
      workdir_lib.prepare(workdir, config)
    sync("workdir")
    with StopSignals() as stop:
      return _train(exp, workdir, stop, started, wall_start)
  finally:
    lock.release()


def _itstime(step: int, new_step: int, every: int) -> bool:
  """Whether a multiple of `every` lies in (step, new_step]: the one rule of every
  periodic action (chunks of several steps may jump over the exact step)."""
  return every > 0 and new_step // every > step // every


def chunk_end(step: int, total: int, k: int, per_epoch: int | None,
              unrolled: bool = False) -> int:
  """The step a chunk of up to `k` steps from `step` ends at: chunks end on multiples of
  `k` counted from each epoch's start, never cross an epoch's end, nor `total`.

  `unrolled` chunks (convolutional models on CPU) are compiled once per length, at a cost
  that grows with it; one cut short (an epoch's or the run's end, a resumed run
  realigning) runs as single steps instead, whose program compiles in a fraction of the
  time (MNIST's CNN: a 7-step chunk took ~3 s to compile)."""
  if per_epoch:
    epoch, index = divmod(step, per_epoch)
    end = epoch * per_epoch + min((index // k + 1) * k, per_epoch)
  else:
    end = (step // k + 1) * k
  end = min(end, total)
  return step + 1 if unrolled and end - step < k else end


def _reduce_on_plateau(tracker: EarlyStopping, state: Any, value: float, step: int,
                       sched: ml_collections.ConfigDict) -> tuple[Any, str]:
  """Records one evaluation; after `plateau_patience` without improvement, multiplies
  the learning rate's scale in the optimizer state by plateau_factor (floored at
  plateau_min_scale). Returns the state and what to add to the console line."""
  tracker.update(value, step)
  if tracker.bad_evaluations < tracker.patience:
    return state, ""
  tracker.bad_evaluations = 0
  old = optim.plateau_scale(state)
  if old is None:          # a task whose optimizers are not optim.build's
    return state, ""
  new = max(old * sched.plateau_factor, sched.plateau_min_scale)
  if new >= old:
    return state, ""
  return optim.set_plateau_scale(state, new), f" | plateau: lr x{new:.3g}"


def _add(a: dict[str, float] | None, b: dict[str, Any]) -> dict[str, float]:
  b = {k: float(v) for k, v in jax.device_get(b).items()}
  return b if a is None else {k: a[k] + b[k] for k in a}


def _train(exp: Experiment, workdir: str, stop: StopSignals, started: str,
           wall_start: float) -> dict[str, Any]:
  config, parallel, task, source = exp.config, exp.parallel, exp.task, exp.source
  total, per_epoch = exp.plan.total_steps, exp.plan.steps_per_epoch
  state = parallel.put_state(task.init_state(exp.plan))
  state = transfer.start(exp, workdir, state)   # config.init_from on a fresh start
  ckpt = Checkpointer(os.path.join(workdir, LAST), config.keep_checkpoints)
  best_ckpt = Checkpointer(os.path.join(workdir, BEST), 1)
  monitor = monitored_metric(config)
  monitored_evaluator, _, monitored_name = monitor.partition("/")
  stopper = EarlyStopping(monitor, task.METRICS[monitored_name].higher_is_better,
                          config.early_stopping.patience, config.early_stopping.min_delta)
  sched = config.schedule
  plateau = (EarlyStopping(monitor, stopper.higher_is_better, sched.plateau_patience,
                           sched.plateau_min_delta)
             if sched.get("plateau_factor", 1.0) < 1.0 else None)
  # What the console counts in: epochs (steps per epoch), or steps for a run of a fixed
  # number of steps (None).
  counted_epoch = None if config.num_steps else per_epoch
  window = epoch_sums = None
  if ckpt.latest_step() is not None:
    state, meta, warnings = ckpt.restore_latest_good(state)
    for warning in warnings:
      print(warning, file=sys.stderr)
    stopper.resume(meta.get("early_stopping"))
    if plateau is not None:
      plateau.resume(meta.get("plateau"))
    window, epoch_sums = meta.get("window"), meta.get("epoch_sums")
    if meta.get("process_count", 1) != parallel.process_count:
      # Each process draws from its own share of the data: other shares, other batches.
      print(f"warning: this run was checkpointed by {meta.get('process_count', 1)} "
            f"process(es) and continues with {parallel.process_count}; the data order from "
            f"here on differs from an uninterrupted run's.", file=sys.stderr)
    print(f"Resuming from the checkpoint at step {int(state.step)} in {ckpt.directory}.")
  step = int(state.step)
  finished = records.read_run_record(workdir)
  if (step >= total or stopper.stopped) and finished and finished.get("steps") == step:
    ckpt.close()
    best_ckpt.close()
    print(f"The run in {workdir} is finished (step {step} of {total}"
          + (", stopped early" if stopper.stopped else "") + f"); its results are in "
          f"{os.path.join(workdir, records.RUN_FILE)}. Nothing was changed; pass "
          f"--config_change=restart or another --workdir to train again.")
    return finished
  best_ckpt.delete_after(step)
  progress = Progress(total, counted_epoch, start_step=step, metrics=task.METRICS,
                      stream=None if parallel.is_main else open(os.devnull, "w"))
  n_params = task.num_parameters(state)
  progress.message(
      f"{task.title()} ({n_params:,} parameters): "
      f"{source.num_train_examples} training examples, "
      + (f"{counted_epoch} steps/epoch, " if counted_epoch else "")
      + f"{total} steps, global batch {config.batch_size} on {parallel.num_devices} "
      f"{jax.default_backend()} device(s)"
      + (f" in {parallel.process_count} processes" if parallel.process_count > 1 else "")
      + f", {config.parallel.mode} mode.")

  source.bind(parallel)
  evaluators = task.evaluators()
  if parallel.is_main:   # records past the checkpoint are redone (all of them, if none)
    writers.truncate_metrics(workdir, step if ckpt.latest_step() is not None else -1,
                             tuple(n + suffix for n, e in evaluators.items()
                                   if not e.periodic
                                   for suffix in ("", optim.EMA_SUFFIX)))
  train_chunk = parallel.compile_train_chunk(task.train_step, config.batch_size,
                                             unroll=task.unroll_on_cpu)
  writer = writers.create_writer(workdir, active=parallel.is_main)
  out = Artifacts(workdir, parallel.is_main, config.plots)

  def position(s: int) -> str:
    return f"epoch {s / counted_epoch:6.2f}" if counted_epoch else f"step {s:6d}"

  def evaluate(s: int) -> tuple[str, float | None]:
    """Runs the periodic evaluators and the task's per-evaluation artifacts (on the
    weights' moving average too, or instead, with optimizer.ema_decay)."""
    line, monitored = "", None
    weights = optim.evaluated_weights(config.optimizer, state)
    for suffix, evaluated in weights:
      for name, evaluator in evaluators.items():
        if evaluator.periodic:
          metrics = evaluator.run(evaluated)
          writer.write_scalars(s, {f"{name}{suffix}/{k}": v for k, v in metrics.items()})
          line += f" | {name}{suffix} " + format_metrics(metrics, task.METRICS)
          if name == monitored_evaluator and not suffix:
            monitored = metrics[monitored_name]
    task.artifacts(weights[0][1], s, out, final=False)
    return line, monitored

  if step == 0:     # the before of every before/after
    line, _ = evaluate(0)
    if line:
      progress.message(f"{position(0)} | before training{line}")
    writer.flush()

  last_saved = ckpt.latest_step()
  count_flops = config.get("count_flops", True) and parallel.is_main
  # The logged schedules, each compiled once: evaluated op by op, the first value of a
  # one-cycle schedule took ~1 s on CPU (every jnp op compiled on its own).
  schedules = {name: jax.jit(schedule) for name, schedule in task.schedules.items()}
  if step < total and not stopper.stopped:
    progress.message("Compiling the train step (the first chunk waits for it; the "
                     "compilation cache makes the next run start sooner)...")
  while step < total and not stopper.stopped:
    new_step = chunk_end(step, total, config.steps_per_dispatch, per_epoch,
                         train_chunk.unrolled)
    batches = source.batches(step, new_step - step, exp.local_batch)
    state, sums, finite = train_chunk(state, batches, new_step - step)
    sums = jax.device_get(sums)
    window, epoch_sums = _add(window, sums), _add(epoch_sums, sums)
    chunk = task.summarize(sums)
    if not (all(math.isfinite(v) for v in chunk.values()) and bool(finite)):
      kept = (f"the last good checkpoint is step {last_saved} in {ckpt.directory} (kept)"
              if last_saved is not None else "no checkpoint was saved before")
      ckpt.close()                   # pending saves finish (in every process)
      best_ckpt.close()
      raise TrainingDiverged(
          f"Training diverged between steps {step} and {new_step} "
          f"({format_metrics(chunk, task.METRICS)}; state "
          f"{'finite' if bool(finite) else 'not finite'}); {kept}; lower the learning "
          f"rate or add gradient clipping (optimizer.grad_clip_norm).")
    progress.update(new_step, chunk)
    if count_flops:   # once, after the first chunk's line (rates start from the second)
      count_flops = False
      progress.flops_per_step = flops.step_flops(task.train_step, state, batches,
                                                 config.batch_size, train_chunk.traced())
      peak, peak_source = flops.device_peak(config.get("peak_flops", 0.0))
      progress.peak_flops = peak and peak * parallel.num_devices
      progress.message(flops.describe(progress.flops_per_step, peak, peak_source,
                                      parallel.num_devices))

    epoch_end = bool(per_epoch) and new_step % per_epoch == 0 or new_step == total
    if epoch_end or _itstime(step, new_step, config.log_every_steps):
      scalars = {f"train/{k}": v for k, v in task.summarize(window).items()}
      scalars.update({f"train/{name}": float(schedule(new_step - 1))
                      for name, schedule in schedules.items()})
      if plateau is not None:
        scalars["train/plateau_scale"] = optim.plateau_scale(state)
      writer.write_scalars(new_step, scalars)
      window = None
    evaluate_now = (_itstime(step, new_step, config.eval_every_steps) or
                    new_step == total or (not config.eval_every_steps and epoch_end))
    if evaluate_now:
      line, monitored = evaluate(new_step)
      line = (f"{position(new_step)} | train "
              + format_metrics(task.summarize(epoch_sums), task.METRICS) + line)
      epoch_sums = None
      if monitored is not None and stopper.update(monitored, new_step):
        best_ckpt.save(new_step, state, {monitor: monitored, "task": task.metadata()})
        line += " *"
      if monitored is not None and plateau is not None:
        state, reduced = _reduce_on_plateau(plateau, state, monitored, new_step, sched)
        line += reduced
      progress.message(line)
      if stopper.stopped:
        progress.message(
            f"Early stopping: {stopper.metric} has not improved for {stopper.patience} "
            f"evaluations; the best was {stopper.best:.4f} at step {stopper.best_step}.")
      writer.flush()
    signum = stop.agreed_signal(parallel.process_count)
    if (epoch_end or evaluate_now or stopper.stopped or signum is not None or
        _itstime(step, new_step, config.checkpoint_every_steps)):
      writer.flush()       # every record up to this step is on disk before the checkpoint
      ckpt.save(new_step, state, {"epoch": new_step / per_epoch if per_epoch else None,
                                  "early_stopping": dataclasses.asdict(stopper),
                                  "plateau": plateau and dataclasses.asdict(plateau),
                                  "window": window, "epoch_sums": epoch_sums,
                                  "task": task.metadata(),
                                  "process_count": parallel.process_count})
      last_saved = new_step
    step = new_step
    if signum is not None and step < total:
      writer.close()
      ckpt.close()
      best_ckpt.close()
      name = signal.Signals(signum).name
      raise Preempted(f"Stopped by {name} at step {step} of {total}; the checkpoint "
                      f"is saved in {ckpt.directory}. Re-run the same command to continue.",
                      signum)

  stop.release()   # from here on the run is complete: signals act normally
  used = "last"
  if config.evaluate_checkpoint == "best" and best_ckpt.latest_step() is not None:
    best_ckpt.wait()
    state, _ = best_ckpt.restore(state)
    used = "best"
  used_step = int(state.step)
  final, final_periodic = {}, {}
  weights = optim.evaluated_weights(config.optimizer, state)
  for suffix, evaluated in weights:
    for name, evaluator in evaluators.items():
      final[name + suffix] = evaluator.run(evaluated)
      final_periodic[name + suffix] = evaluator.periodic
      if not evaluator.periodic:
        writer.write_scalars(step, {f"{name}{suffix}/{k}": v
                                    for k, v in final[name + suffix].items()})
  writer.close()
  ckpt.close()
  best_ckpt.close()
  report = task.artifacts(weights[0][1], used_step, out, final=True)
  wall = time.perf_counter() - wall_start
  if not parallel.is_main:
    return {"final": final, "steps": step}
  out.figure("learning_curves.png", lambda path: plots.learning_curves(
      writers.read_metrics(workdir), path, title=task.title(), steps_per_epoch=per_epoch))
  record = {
      "config": config.to_dict(), "seed": config.seed, "workdir": os.path.abspath(workdir),
      "started": started, "finished": records.now(), "wall_time_s": round(wall, 2),
      "steps": step, "epochs": step / per_epoch if per_epoch else None,
      "steps_per_epoch": per_epoch, "early_stopped": stopper.stopped,
      "num_parameters": n_params, "init_from": transfer.recorded(workdir), "final": final,
      "speed": {"train_steps_per_s": progress.mean_steps_per_s(),
                "flops_per_step": progress.flops_per_step,
                "peak_flops": progress.peak_flops,
                "mfu": progress.mfu(progress.mean_steps_per_s())},
      "metrics": {name: dataclasses.asdict(m) for name, m in task.METRICS.items()},
      "monitored_metric": monitor,
      "evaluated_checkpoint": {"which": used, "step": used_step},
      "environment": records.environment(),
  }
  records.write_run_record(workdir, record)
  if report:
    progress.message(report.rstrip())
  summary = " | ".join(f"{name} {format_metrics(m, task.METRICS)}"
                       for name, m in final.items() if not final_periodic[name]) or "done"
  progress.message(
      f"{summary} ({used} checkpoint, step {used_step}) | "
      + (f"{step / counted_epoch:g} epochs, " if counted_epoch else f"{step} steps, ")
      + f"this process {format_duration(wall)} | results in {workdir}")
  return record
