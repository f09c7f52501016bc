"""Hyperparameter search: ``python -m practice_jax.sweep --config=configs/X.py --sweep=FILE``.

Each trial is an ordinary run of ``practice_jax.main`` in its own sub-workdir
(``<workdir>/trial_<n>``, with ``seed_<s>`` below it when repeating over seeds):
checkpointed, resumable and recorded in the sweep's ledger (``<workdir>/ledger.sqlite``).
The search itself is Optuna's (grid, random or TPE sampler), kept in a study stored in
``<workdir>/optuna.sqlite`` or in ``--storage=URL``.

The sweep file is a small Python file, like a config::

    from practice_jax.sweep import choice, integer, loguniform, uniform

    def get_sweep():
      return dict(
          method="tpe",                       # grid | random | tpe
          trials=8,                           # the budget (grid: at most the grid's size)
          metric="validation/accuracy",       # default: the task's monitored metric
          space={
              "optimizer.learning_rate": loguniform(1e-4, 1e-2, points=3),
              "optimizer.weight_decay": choice(0.0, 1e-4, 1e-2),
              "model.dropout": uniform(0.0, 0.5, points=2),
              "batch_size": integer(32, 256, log=True),
          })

Optional keys: ``direction`` ('maximize' | 'minimize'; default from the metric's
direction), ``seeds`` (repeat each trial over these seeds; the objective is their mean),
``pruner`` (None, 'median' or 'halving': stop hopeless trials from their periodic
evaluations), ``objective`` ('final': the run's final evaluation, the default; 'best': the
best periodic evaluation), ``sampler_seed``. Grid search needs a finite set for every key:
``choice(...)``, ``integer(...)`` or ``uniform/loguniform(..., points=N)``.

Settings given as ``--config.key=value`` on the sweep's command line go to every trial.

Interrupted sweeps: run the same command again. Finished trials are kept (the study
is loaded from its storage); a trial that was running when its sweep died (killed,
machine lost) is marked failed-and-superseded and re-run with the same parameters in the
same trial workdir, where ``main.py`` resumes from its last checkpoint. A trial counts as
dead when the sweep process that ran it (same host, recorded pid) is gone; on SIGTERM or
Ctrl-C the sweep stops its running trials (which save a checkpoint) and exits.

A trial whose run fails (an error, a diverged loss) is recorded as failed with its error
and counts towards the budget; it is not retried. A pruned trial counts as well.

Several processes: ``--parallel=K`` runs K worker processes sharing the storage. Several
machines: give each the same ``--storage`` of a database server, e.g.
``--storage=postgresql://user:pass@host/db`` (needs ``psycopg2``) or
``mysql+pymysql://user:pass@host/db`` (needs ``PyMySQL``), and a workdir on a shared
file system or one per machine; each machine recovers the trials its own killed sweeps
left running. With several machines the budget is checked without a shared lock, so a
trial or two more than ``trials`` may run. SQLite files do not work on NFS.

At the end: a table of the trials (parameters and value, mean and standard deviation
over seeds), ``best_config.py`` (a runnable config: the original file plus the best
values), ``best_vs_trials.png`` (best value against trials spent) and ``results.json``.
``python -m practice_jax.sweep compare OUT.png SWEEP_DIR...`` draws several sweeps' best
value against trials spent in one PNG and prints them as a table.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import fcntl
import importlib.util
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

METHODS = ("grid", "random", "tpe")
PRUNERS = (None, "median", "halving")
OBJECTIVES = ("final", "best")
SPEC_KEYS = {"method", "trials", "metric", "direction", "space", "seeds", "pruner",
             "objective", "sampler_seed"}
GRID_LIMIT = 10_000
POLL_S = 1.0
# Tests replace `python -m practice_jax.main` with a quick stand-in through this variable.
TRIAL_COMMAND_ENV = "PRACTICE_JAX_SWEEP_TRIAL_COMMAND"


class SweepError(Exception):
  """A problem with the sweep, in one sentence."""


# ------------------------------------------------------------------ search space kinds

@dataclasses.dataclass(frozen=True)
class Choice:
  values: tuple

  def describe(self) -> str:
    return f"choice{self.values!r}"


@dataclasses.dataclass(frozen=True)
class Uniform:
  low: float
  high: float
  log: bool = False
  points: int | None = None

  def describe(self) -> str:
    return f"{'log' if self.log else ''}uniform({self.low}, {self.high})"


@dataclasses.dataclass(frozen=True)
class Integer:
  low: int
  high: int
  log: bool = False

  def describe(self) -> str:
    return f"integer({self.low}, {self.high}{', log=True' if self.log else ''})"


def choice(*values) -> Choice:
  """One of `values` (numbers, strings, booleans, tuples)."""
  return Choice(tuple(values))


def uniform(low: float, high: float, points: int | None = None) -> Uniform:
  """A float in [low, high]; `points` evenly spaced values for grid search."""
  return Uniform(low, high, False, points)


def loguniform(low: float, high: float, points: int | None = None) -> Uniform:
  """A float in [low, high], uniform in its logarithm; `points` for grid search."""
  return Uniform(low, high, True, points)


def integer(low: int, high: int, log: bool = False) -> Integer:
  """An integer in [low, high] (both included)."""
  return Integer(low, high, log)


def _is_primitive(value) -> bool:
  return value is None or isinstance(value, (bool, int, float, str))


def grid_values(dim) -> list:
  """The values grid search tries for one dimension (already validated)."""
  if isinstance(dim, Choice):
    return list(_encoded_choices(dim))
  if isinstance(dim, Integer):
    return list(range(dim.low, dim.high + 1))
  if dim.points == 1:
    return [math.sqrt(dim.low * dim.high) if dim.log else (dim.low + dim.high) / 2]
  if dim.log:
    ratio = math.log(dim.high / dim.low)
    inner = [dim.low * math.exp(ratio * i / (dim.points - 1)) for i in range(1, dim.points - 1)]
  else:
    inner = [dim.low + (dim.high - dim.low) * i / (dim.points - 1)
             for i in range(1, dim.points - 1)]
  # The ends exactly as given (exp(log(...)) would put 0.1 at 0.1000000000000001).
  return [dim.low, *(min(max(v, dim.low), dim.high) for v in inner), dim.high]


def _encoded_choices(dim: Choice) -> tuple:
  """Optuna's categorical values: the values themselves, or their repr for tuples."""
  if all(_is_primitive(v) for v in dim.values):
    return dim.values
  return tuple(repr(v) for v in dim.values)


def _decode(dim, value):
  if isinstance(dim, Choice) and not all(_is_primitive(v) for v in dim.values):
    return dim.values[[repr(v) for v in dim.values].index(value)]
  return value


def suggest(trial, name: str, dim):
  if isinstance(dim, Choice):
    return _decode(dim, trial.suggest_categorical(name, list(_encoded_choices(dim))))
  if isinstance(dim, Integer):
    return trial.suggest_int(name, dim.low, dim.high, log=dim.log)
  return trial.suggest_float(name, dim.low, dim.high, log=dim.log)


# ------------------------------------------------------------------ the spec and its checks

@dataclasses.dataclass
class Spec:
  method: str
  space: dict[str, Any]
  trials: int
  metric: str
  direction: str
  seeds: tuple[int, ...]
  pruner: str | None
  objective: str
  sampler_seed: int


def _load_module(path: str, what: str):
  if not os.path.isfile(path):
    raise SweepError(f"{what} file {path} does not exist.")
  module_spec = importlib.util.spec_from_file_location(
      f"practice_jax_{what.lower()}_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except Exception as e:  # noqa: BLE001 - any failure of user code is reported as such
    raise SweepError(f"{what} file {path} could not be loaded: {type(e).__name__}: {e}.")
  return module


def split_config_arg(config_arg: str) -> tuple[str, str | None]:
  """'configs/x.py:arg' -> ('configs/x.py', 'arg'), as ml_collections reads it."""
  if ":" in config_arg and not os.path.isfile(config_arg):
    path, arg = config_arg.split(":", 1)
    return path, arg
  return config_arg, None


def load_config(config_arg: str):
  path, arg = split_config_arg(config_arg)
  module = _load_module(path, "Config")
  if not hasattr(module, "get_config"):
    raise SweepError(f"Config file {path} has no get_config() function.")
  try:
    return module.get_config(arg) if arg is not None else module.get_config()
  except Exception as e:  # noqa: BLE001
    raise SweepError(f"Config file {path} could not be loaded: {type(e).__name__}: {e}.")


def _lookup(config, key: str):
  """The config value at dotted `key`, or raises SweepError naming the closest keys."""
  from practice_jax.config_base import unknown_key
  node = config
  for part in key.split("."):
    if not hasattr(node, "keys") or part not in node:
      raise SweepError(unknown_key(config, key))
    node = node[part]
  if hasattr(node, "keys"):
    first = next(iter(node.keys()), "name")
    raise SweepError(f"config.{key} is a section, not a setting; sweep one of its keys, "
                     f"e.g. config.{key}.{first}.")
  return node


def _value_fits(default, value) -> bool:
  if isinstance(default, bool) or isinstance(value, bool):
    return isinstance(default, bool) == isinstance(value, bool) or default is None
  if default is None:
    return True
  if isinstance(default, float):
    return isinstance(value, (int, float))
  if isinstance(default, int):
    return isinstance(value, int)
  if isinstance(default, str):
    return isinstance(value, str)
  if isinstance(default, (tuple, list)):
    return isinstance(value, (tuple, list))
  return True


def _check_dim(key: str, dim, default, method: str) -> None:
  where = f"config.{key}"
  kind = type(default).__name__
  kind = ("an " if kind[0] in "aeiou" else "a ") + kind
  if isinstance(dim, Choice):
    if not dim.values:
      raise SweepError(f"{where}: choice() needs at least one value.")
    for v in dim.values:
      if not _value_fits(default, v):
        raise SweepError(f"{where} is {kind} (default {default!r}); choice value {v!r} "
                         f"is {type(v).__name__}.")
    if len(set(map(repr, dim.values))) != len(dim.values):
      raise SweepError(f"{where}: choice{dim.values!r} repeats a value.")
    return
  if isinstance(dim, Integer):
    if not (isinstance(dim.low, int) and isinstance(dim.high, int)):
      raise SweepError(f"{where}: integer({dim.low!r}, {dim.high!r}) needs whole numbers.")
    if isinstance(default, bool) or not isinstance(default, (int, float)):
      raise SweepError(f"{where} is {kind} (default {default!r}), not a number; use "
                       f"choice(...).")
    if dim.low > dim.high:
      raise SweepError(f"{where}: integer({dim.low}, {dim.high}) has low above high.")
    if dim.log and dim.low < 1:
      raise SweepError(f"{where}: integer(..., log=True) needs low >= 1, not {dim.low}.")
    if method == "grid" and dim.high - dim.low + 1 > GRID_LIMIT:
      raise SweepError(f"{where}: integer({dim.low}, {dim.high}) has too many values for "
                       f"grid search; use choice(...).")
    return
  if isinstance(dim, Uniform):
    name = "loguniform" if dim.log else "uniform"
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
               for x in (dim.low, dim.high)):
      raise SweepError(f"{where}: {name}({dim.low!r}, {dim.high!r}) needs finite numbers.")
    if not isinstance(default, float) or isinstance(default, bool):
      hint = "integer(...)" if isinstance(default, int) and not isinstance(default, bool) \
          else "choice(...)"
      raise SweepError(f"{where} is {kind} (default {default!r}), not a float; use "
                       f"{hint}.")
    if not dim.low < dim.high:
      raise SweepError(f"{where}: {name}({dim.low}, {dim.high}) needs low below high.")
    if dim.log and dim.low <= 0:
      raise SweepError(f"{where}: loguniform({dim.low}, {dim.high}) needs low above 0.")
    if dim.points is not None and (not isinstance(dim.points, int) or dim.points < 1):
      raise SweepError(f"{where}: points={dim.points!r} must be a whole number >= 1.")
    if method == "grid" and dim.points is None:
      raise SweepError(f"Grid search needs a finite set of values for {where}: give "
                       f"{name}({dim.low}, {dim.high}, points=N) or choice(...).")
    return
  raise SweepError(f"{where}: {dim!r} is not a search dimension; use choice(...), "
                   f"uniform(...), loguniform(...) or integer(...) from practice_jax.sweep.")


def _raw_spec(sweep_arg: str):
  """get_sweep() of 'FILE' or get_sweep('ARG') of 'FILE:ARG' (as config files take one)."""
  sweep_path, arg = split_config_arg(sweep_arg)
  module = _load_module(sweep_path, "Sweep")
  if not hasattr(module, "get_sweep"):
    raise SweepError(f"Sweep file {sweep_path} has no get_sweep() function.")
  try:
    return module.get_sweep() if arg is None else module.get_sweep(arg)
  except Exception as e:  # noqa: BLE001
    raise SweepError(f"get_sweep() of {sweep_path} failed: {type(e).__name__}: {e}.")


def load_spec(sweep_path: str, config, seeds: str | None = None,
              trials: int | None = None, resolve_metric: bool = True) -> Spec:
  """Reads and checks the sweep file; raises SweepError in one sentence."""
  raw = _raw_spec(sweep_path)
  if not isinstance(raw, dict):
    raise SweepError(f"get_sweep() in {sweep_path} must return a dict, not a "
                     f"{type(raw).__name__}.")
  unknown = sorted(set(raw) - SPEC_KEYS)
  if unknown:
    raise SweepError(f"Sweep file {sweep_path}: unknown key {unknown[0]!r}; the keys are "
                     f"{', '.join(sorted(SPEC_KEYS))}.")
  method = raw.get("method", "tpe")
  if method not in METHODS:
    raise SweepError(f"method={method!r} is not one of {', '.join(METHODS)}.")
  space = raw.get("space")
  if not isinstance(space, dict) or not space:
    raise SweepError(f"Sweep file {sweep_path} needs space={{'config.key': choice(...), "
                     f"...}} with at least one key.")
  space = {k.removeprefix("config."): v for k, v in space.items()}
  for key, dim in space.items():
    _check_dim(key, dim, _lookup(config, key), method)
  if "seed" in space and (seeds or raw.get("seeds")):
    raise SweepError("config.seed is in the search space; drop it or the seeds to repeat.")
  pruner = raw.get("pruner")
  if pruner not in PRUNERS:
    raise SweepError(f"pruner={pruner!r} is not one of None, 'median', 'halving'.")
  objective = raw.get("objective", "final")
  if objective not in OBJECTIVES:
    raise SweepError(f"objective={objective!r} is not one of 'final', 'best'.")
  seed_list = raw.get("seeds", (config.get("seed", 0),))
  if seeds:
    try:
      seed_list = tuple(int(s) for s in seeds.split(","))
    except ValueError:
      raise SweepError(f"--seeds={seeds} must be whole numbers separated by commas.") from None
  seed_list = tuple(seed_list)
  if not seed_list or not all(isinstance(s, int) for s in seed_list) or \
      len(set(seed_list)) != len(seed_list):
    raise SweepError(f"seeds={seed_list!r} must be distinct whole numbers.")
  if pruner and len(seed_list) > 1:
    raise SweepError("Pruning follows one run per trial; use one seed or pruner=None.")
  grid_size = math.prod(len(grid_values(d)) for d in space.values()) \
      if method == "grid" else None
  budget = trials if trials is not None else raw.get("trials", grid_size)
  if budget is None:
    raise SweepError(f"{method} search needs a budget: trials=N in the sweep file or "
                     f"--trials=N.")
  if not isinstance(budget, int) or budget < 1:
    raise SweepError(f"trials={budget!r} must be a whole number >= 1.")
  if grid_size is not None:
    budget = min(budget, grid_size)
  metric = raw.get("metric")
  direction = raw.get("direction")
  if direction not in (None, "maximize", "minimize"):
    raise SweepError(f"direction={direction!r} is not 'maximize' or 'minimize'.")
  if resolve_metric:
    metric, direction = _resolve_metric(config, metric, direction)
  sampler_seed = raw.get("sampler_seed", 0)
  if not isinstance(sampler_seed, int):
    raise SweepError(f"sampler_seed={sampler_seed!r} must be a whole number.")
  return Spec(method, space, budget, metric or "", direction or "", seed_list, pruner,
              objective, sampler_seed)


def _resolve_metric(config, metric, direction) -> tuple[str, str]:
  """The metric ('evaluator/name') and its direction, from the task (imports JAX)."""
  from practice_jax import tasks
  from practice_jax.validation import monitored_metric
  problem = tasks.check_name(config.task.name)
  if problem:
    raise SweepError(problem)
  task = tasks.get(config.task.name)
  metric = metric or monitored_metric(config)
  if "/" not in metric:
    metric = f"validation/{metric}"
  name = metric.split("/", 1)[1]
  if name not in task.METRICS:
    raise SweepError(f"metric={metric!r}: the task {config.task.name!r} reports "
                     f"{', '.join(sorted(task.METRICS))}.")
  if direction is None:
    direction = "maximize" if task.METRICS[name].higher_is_better else "minimize"
  return metric, direction


# ------------------------------------------------------------------ running one trial

def _format_value(default, value) -> str:
  if isinstance(value, float) or (isinstance(default, float) and not isinstance(value, bool)):
    return repr(float(value))
  if isinstance(value, (tuple, list)):
    return repr(tuple(value))
  return str(value)


def _parse_fixed(config, items: list[str]) -> dict[str, Any]:
  """--config.key=value pass-through settings, as values of the default's type."""
  fixed = {}
  for item in items:
    key, sep, text = item[len("--config."):].partition("=")
    if not sep:
      raise SweepError(f"{item} needs a value: --config.{key}=VALUE.")
    default = _lookup(config, key)
    if isinstance(default, str):
      value = text
    else:
      try:
        value = ast.literal_eval(text)
      except (ValueError, SyntaxError):
        value = text
      if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    fixed[key] = value
  return fixed


def _alive(pid: int | None) -> bool:
  """Whether `pid` runs on this host: workdir's check, and not a zombie (dead, not yet
  reaped by the parent that started it)."""
  from practice_jax.workdir import process_alive
  if not pid or not process_alive(pid):
    return False
  with contextlib.suppress(OSError):
    with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
      if f.read().split(")")[-1].split()[0] == "Z":   # a zombie: dead, not yet reaped
        return False
  return True


def _die_with_parent() -> None:
  """In the trial process: SIGTERM it (save and stop) when the sweep process dies."""
  with contextlib.suppress(Exception):
    import ctypes
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _grid_sampler_class():
  import optuna

  class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler, without its study.stop() once the grid is exhausted (it
    works only inside study.optimize; the sweep counts its budget itself)."""

    def after_trial(self, study, trial, state, values) -> None:
      pass

  return GridSampler


def _GridSampler(*args, **kwargs):  # noqa: N802 - a class made on first use (lazy import)
  return _grid_sampler_class()(*args, **kwargs)


class Sweep:
  def __init__(self, args, spec: Spec, config, fixed: dict[str, Any]):
    self.args, self.spec, self.config, self.fixed = args, spec, config, fixed
    self.workdir = os.path.abspath(args.workdir)
    self.name = os.path.basename(self.workdir.rstrip("/"))
    self.storage_url = args.storage or "sqlite:///" + os.path.join(self.workdir,
                                                                   "optuna.sqlite")
    self.ledger = args.ledger if args.ledger is not None else os.path.join(
        self.workdir, "ledger.sqlite")
    self.child: subprocess.Popen | None = None
    self.stopping = False

  # --- study
  def storage(self):
    import optuna
    if self.storage_url.startswith("sqlite:"):
      return optuna.storages.RDBStorage(
          self.storage_url, engine_kwargs={"connect_args": {"timeout": 60}})
    return optuna.storages.RDBStorage(self.storage_url)

  def study(self, worker: int = 0):
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = self.spec
    storage = self.storage()
    study = optuna.create_study(study_name=self.name, storage=storage,
                                direction=spec.direction, load_if_exists=True)
    # A new seed per start and per worker: a resumed random sweep does not replay itself.
    seed = spec.sampler_seed + 1000 * worker + len(study.get_trials(deepcopy=False))
    if spec.method == "grid":
      # One shuffle of the grid for every worker and start: a grid id means one point.
      sampler = _GridSampler({k: grid_values(d) for k, d in spec.space.items()},
                             seed=spec.sampler_seed)
    elif spec.method == "random":
      sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
      sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(
          10, max(2, spec.trials // 3)))
    pruner = {None: optuna.pruners.NopPruner(),
              "median": optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
              "halving": optuna.pruners.SuccessiveHalvingPruner()}[spec.pruner]
    return optuna.load_study(study_name=self.name, storage=storage, sampler=sampler,
                             pruner=pruner)

  def stored_metric(self) -> tuple[str, str] | None:
    """The metric and direction of this workdir's study, if it exists already."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if self.storage_url.startswith("sqlite:///") and not os.path.exists(
        self.storage_url[len("sqlite:///"):]):
      return None
    with contextlib.suppress(KeyError):
      study = optuna.load_study(study_name=self.name, storage=self.storage())
      if "metric" in study.user_attrs:
        return study.user_attrs["metric"], study.direction.name.lower()
    return None

  def check_study(self, study) -> None:
    attrs = study.user_attrs
    mine = {"metric": self.spec.metric, "method": self.spec.method,
            "space": sorted(self.spec.space)}
    if not attrs:
      for k, v in mine.items():
        study.set_user_attr(k, v)
      study.set_user_attr("config", self.args.config)
      return
    for k, v in mine.items():
      if attrs.get(k) != v:
        raise SweepError(f"The sweep in {self.workdir} was started with {k}={attrs.get(k)!r}, "
                         f"not {v!r}; use another --workdir for a different sweep.")

  @contextlib.contextmanager
  def lock(self):
    with open(os.path.join(self.workdir, ".sweep.lock"), "w") as f:
      fcntl.flock(f, fcntl.LOCK_EX)
      try:
        yield
      finally:
        fcntl.flock(f, fcntl.LOCK_UN)

  def recover(self, study) -> list[int]:
    """Trials left RUNNING by a dead sweep process of this host: superseded by a retry
    with the same parameters in the same workdir. Returns their numbers."""
    from optuna.trial import TrialState
    storage, recovered = study._storage, []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
      a = t.user_attrs
      if a.get("host") != socket.gethostname() or _alive(a.get("pid")):
        continue
      deadline = time.time() + 120   # its run saves a checkpoint on the sweep's death
      while _alive(a.get("child_pid")) and time.time() < deadline:
        time.sleep(0.5)
      storage.set_trial_user_attr(t._trial_id, "superseded", True)
      storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
      study.enqueue_trial(t.params, user_attrs={"workdir": a.get("workdir"),
                                                 "retry_of": t.number},
                          skip_if_exists=False)
      recovered.append(_trial_label(t.number, a.get("workdir")))
    return recovered

  def spent(self, study) -> int:
    from optuna.trial import TrialState
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
               or (t.state == TrialState.FAIL and not t.user_attrs.get("superseded")))

  # --- the worker loop
  def work(self, worker: int) -> None:
    from optuna.trial import TrialState
    study = self.study(worker)
    while not self.stopping:
      with self.lock():
        if self.spent(study) >= self.spec.trials:
          return
        trial = study.ask()
        workdir = trial.user_attrs.get("workdir") or os.path.join(
            self.workdir, f"trial_{trial.number}")
        trial.set_user_attr("workdir", workdir)
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
      params = {k: suggest(trial, k, d) for k, d in self.spec.space.items()}
      state, values, error = self.run_trial(trial, params, workdir)
      if self.stopping and state is None:   # stopped by SIGTERM/Ctrl-C: retry next time
        with self.lock():
          study._storage.set_trial_user_attr(trial._trial_id, "superseded", True)
          study.tell(trial, state=TrialState.FAIL)
          study.enqueue_trial(trial.params, user_attrs={"workdir": workdir,
                                                        "retry_of": trial.number})
        return
      if values:
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        trial.set_user_attr("values", values)
        trial.set_user_attr("std", std)
      if error:
        trial.set_user_attr("error", error)
      if state == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
      elif values and state == "complete":
        study.tell(trial, mean)
      else:
        study.tell(trial, state=TrialState.FAIL)
      label = ", ".join(f"{k}={_show(v)}" for k, v in params.items())
      result = (f"{self.spec.metric}={_show(mean)}" if values and state == "complete"
                else state if state == "pruned" else f"failed: {error}")
      print(f"[sweep {self.name}] trial {_trial_label(trial.number, workdir)} ({label}): "
            f"{result}", flush=True)

  def command(self, trial_number: int, params: dict[str, Any], workdir: str,
              seed: int) -> list[str]:
    prefix = os.environ.get(TRIAL_COMMAND_ENV)
    cmd = prefix.split() if prefix else [sys.executable, "-m", "practice_jax.main"]
    cmd += [f"--config={self.args.config}", f"--workdir={workdir}",
            f"--ledger={self.ledger}",
            f"--note=sweep {self.name} trial {trial_number}"
            + (f" seed {seed}" if len(self.spec.seeds) > 1 else "")]
    settings = {**self.fixed, **params}
    if len(self.spec.seeds) > 1 or "seed" in self.fixed:
      settings["seed"] = seed
    for key, value in settings.items():
      cmd.append(f"--config.{key}={_format_value(_lookup(self.config, key), value)}")
    return cmd

  def run_trial(self, trial, params, workdir):
    """Runs the trial's seeds one after another. Returns (state, values, error) with
    state 'complete', 'pruned', 'failed' or None (the sweep is stopping)."""
    values = []
    many = len(self.spec.seeds) > 1
    for seed in self.spec.seeds:
      run_dir = os.path.join(workdir, f"seed_{seed}") if many else workdir
      os.makedirs(run_dir, exist_ok=True)
      cmd = self.command(_trial_label(trial.number, workdir), params, run_dir, seed)
      with open(os.path.join(run_dir, "sweep_trial.log"), "a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        self.child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                      preexec_fn=_die_with_parent)
        trial.set_user_attr("child_pid", self.child.pid)
        pruned = self.follow(trial, run_dir) if self.spec.pruner else False
        code = self.child.wait()
        self.child = None
      if self.stopping:
        return None, values, None
      if pruned:
        return "pruned", values, None
      if code != 0:
        return "failed", values, _last_error(run_dir, code)
      value = read_objective(run_dir, self.spec.metric, self.spec.objective,
                             self.spec.direction)
      if value is None or not math.isfinite(value):
        return "failed", values, f"{self.spec.metric} is missing or not finite"
      values.append(value)
    return "complete", values, None

  def follow(self, trial, run_dir: str) -> bool:
    """Reports the run's periodic evaluations to Optuna while it runs; stops the run
    (SIGTERM: it saves and stops) when the pruner says it is hopeless."""
    from practice_jax.reporting import writers
    split, name = self.spec.metric.split("/", 1)
    reported = set()
    while self.child.poll() is None:
      time.sleep(POLL_S)
      with contextlib.suppress(OSError, ValueError):
        for r in writers.read_metrics(run_dir):
          if r.get("split") == split and name in r and r["step"] not in reported \
              and r["step"] > 0 and math.isfinite(r[name]):
            reported.add(r["step"])
            trial.report(float(r[name]), int(r["step"]))
            if trial.should_prune():
              self.child.send_signal(signal.SIGTERM)
              self.child.wait()
              return True
    return False

  def stop(self, signum, frame) -> None:
    self.stopping = True
    if self.child is not None and self.child.poll() is None:
      self.child.send_signal(signal.SIGTERM)


def _trial_label(number: int, workdir: str | None) -> int:
  """A trial's name: the n of its workdir trial_<n> (a trial re-run after its sweep was
  killed keeps the workdir and the name; Optuna gives the re-run a new number)."""
  with contextlib.suppress(AttributeError, IndexError, ValueError, TypeError):
    return int(os.path.basename(workdir.rstrip("/")).split("_", 1)[1])
  return number


def _show(value) -> str:
  if isinstance(value, float):
    return f"{value:.4g}"
  return repr(value) if isinstance(value, str) else str(value)


def _last_error(run_dir: str, code: int) -> str:
  with contextlib.suppress(OSError):
    with open(os.path.join(run_dir, "sweep_trial.log"), encoding="utf-8") as f:
      lines = [ln.strip() for ln in f if ln.strip().startswith("error:")]
    if lines:
      return lines[-1][len("error:"):].strip()
  return f"exit status {code}; see {run_dir}/sweep_trial.log"


def read_objective(run_dir: str, metric: str, objective: str = "final",
                   direction: str = "maximize") -> float | None:
  """The trial's value: its run.json's final evaluation of `metric` ('final'; the best
  periodic one when the final is absent), or the best periodic evaluation ('best')."""
  from practice_jax.reporting import writers
  split, name = metric.split("/", 1)
  if objective == "final":
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
      with open(os.path.join(run_dir, "run.json"), encoding="utf-8") as f:
        value = json.load(f)["final"][split][name]
      if value is not None:
        return float(value)
  with contextlib.suppress(OSError, ValueError):
    seen = [float(r[name]) for r in writers.read_metrics(run_dir)
            if r.get("split") == split and name in r and r[name] is not None]
    seen = [v for v in seen if math.isfinite(v)]
    if seen:
      return max(seen) if direction == "maximize" else min(seen)
  return None


# ------------------------------------------------------------------ results

def summarize(study, spec: Spec) -> list[dict[str, Any]]:
  """The trials by name, trial_<n> (superseded attempts left out)."""
  rows = []
  for t in study.get_trials(deepcopy=False):
    if t.user_attrs.get("superseded"):
      continue
    params = {k: _decode(spec.space[k], v) if k in spec.space else v
              for k, v in t.params.items()}
    rows.append({"trial": _trial_label(t.number, t.user_attrs.get("workdir")),
                 "number": t.number, "state": t.state.name.lower(), "params": params,
                 "value": t.value, "std": t.user_attrs.get("std"),
                 "values": t.user_attrs.get("values"), "workdir": t.user_attrs.get("workdir"),
                 "error": t.user_attrs.get("error"),
                 "completed": t.datetime_complete.timestamp() if t.datetime_complete
                 else None})
  rows.sort(key=lambda r: (r["trial"], r["number"]))
  return rows


def _in_finishing_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  return sorted((r for r in rows if r["completed"] is not None),
                key=lambda r: (r["completed"], r["number"]))


def trial_values(rows: list[dict[str, Any]]) -> list[float | None]:
  """Each trial's value in the order trials finished (None: pruned or failed)."""
  return [r["value"] if r["state"] == "complete" else None
          for r in _in_finishing_order(rows)]


def best_so_far(rows: list[dict[str, Any]], direction: str) -> list[float | None]:
  """Best value after each trial spent, in the order trials finished."""
  pick = max if direction == "maximize" else min
  out, best = [], None
  for value in trial_values(rows):
    if value is not None:
      best = value if best is None else pick(best, value)
    out.append(best)
  return out


def table(rows: list[dict[str, Any]], spec: Spec) -> str:
  keys = list(spec.space)
  header = ["trial", *keys, spec.metric, "state"]
  lines = []
  for r in rows:
    value = "" if r["value"] is None else f"{r['value']:.4f}"
    if r["value"] is not None and r["std"] is not None and len(r["values"] or []) > 1:
      value += f" ± {r['std']:.4f}"
    lines.append([str(r["trial"]), *(_show(r["params"].get(k, "")) for k in keys), value,
                  r["state"]])
  widths = [max(len(h), *(len(ln[i]) for ln in lines)) if lines else len(h)
            for i, h in enumerate(header)]
  fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
  return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, lines)])


def write_best_config(path: str, config_arg: str, config, settings: dict[str, Any],
                      row: dict[str, Any], metric: str, sweep_name: str) -> None:
  config_path, arg = split_config_arg(config_arg)
  config_path = os.path.abspath(config_path)
  seeds = f" (mean of {len(row['values'])} seeds)" if len(row["values"] or []) > 1 else ""
  lines = [
      f'"""The best trial of sweep {sweep_name}: trial {row["trial"]}, {metric}='
      f'{row["value"]:.6g}{seeds}.',
      "",
      f"    python -m practice_jax.main --config={path}",
      '"""',
      "",
      "import importlib.util",
      "",
      f"_CONFIG_FILE = {config_path!r}",
      "",
      "",
      "def get_config():",
      "  spec = importlib.util.spec_from_file_location('swept_config', _CONFIG_FILE)",
      "  module = importlib.util.module_from_spec(spec)",
      "  spec.loader.exec_module(module)",
      f"  config = module.get_config({'' if arg is None else repr(arg)})",
  ]
  for key, value in settings.items():
    default = _lookup(config, key)
    if isinstance(default, float) and not isinstance(value, bool):
      value = float(value)
    elif isinstance(default, tuple) and isinstance(value, list):
      value = tuple(value)
    lines.append(f"  config.{key} = {value!r}")
  lines += ["  return config", ""]
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines))


def report(sweep: Sweep) -> dict[str, Any]:
  from practice_jax.reporting import sweep_plots
  spec = sweep.spec
  study = sweep.study()
  rows = summarize(study, spec)
  print(table(rows, spec))
  curve = best_so_far(rows, spec.direction)
  done = [r for r in rows if r["state"] == "complete" and r["value"] is not None]
  best = None
  if done:
    pick = max if spec.direction == "maximize" else min
    best = pick(done, key=lambda r: r["value"])
    path = os.path.join(sweep.workdir, "best_config.py")
    write_best_config(path, sweep.args.config, sweep.config, {**sweep.fixed, **best["params"]},
                      best, spec.metric, sweep.name)
    print(f"best: trial {best['trial']} {spec.metric}={best['value']:.4f} "
          f"({', '.join(f'{k}={_show(v)}' for k, v in best['params'].items())}); "
          f"config in {path}")
    sweep_plots.best_vs_trials({spec.method: curve}, spec.metric,
                               os.path.join(sweep.workdir, "best_vs_trials.png"),
                               f"sweep {sweep.name}: best {spec.metric}",
                               trials={spec.method: trial_values(rows)})
  results = {"name": sweep.name, "method": spec.method, "metric": spec.metric,
             "direction": spec.direction, "seeds": list(spec.seeds), "trials": rows,
             "best_so_far": curve, "trial_values": trial_values(rows), "best": best}
  tmp = os.path.join(sweep.workdir, "results.json.tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(results, f, indent=2, default=str)
  os.replace(tmp, os.path.join(sweep.workdir, "results.json"))
  return results


def compare(out_png: str, sweep_dirs: list[str]) -> str:
  """Several sweeps' best value against trials spent: a table (returned) and a PNG."""
  from practice_jax.reporting import sweep_plots
  curves, values, metric, lines = {}, {}, "", []
  for d in sweep_dirs:
    try:
      with open(os.path.join(d, "results.json"), encoding="utf-8") as f:
        results = json.load(f)
    except (OSError, ValueError):
      raise SweepError(f"{d} holds no finished sweep (results.json).") from None
    label = f"{results['method']} ({results['name']})"
    curves[label], metric = results["best_so_far"], results["metric"]
    values[label] = results.get("trial_values", [])
  n = max(len(c) for c in curves.values())
  width = max(len("trials spent"), *map(len, curves)) + 2
  header = "trials spent".ljust(width) + "".join(f"{i + 1:>8d}" for i in range(n))
  lines.append(f"best {metric} against trials spent")
  lines.append(header)
  for label, curve in curves.items():
    lines.append(label.ljust(width) + "".join(
        f"{'' if v is None else f'{v:.4f}':>8s}" for v in curve))
  sweep_plots.best_vs_trials(curves, metric, out_png, trials=values)
  return "\n".join(lines)


# ------------------------------------------------------------------ command line

def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="python -m practice_jax.sweep", description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog="Any --config.key=value is passed to every trial.")
  p.add_argument("--config", required=True, help="the experiment's config file")
  p.add_argument("--sweep", required=True, help="the sweep file (get_sweep())")
  p.add_argument("--workdir", help="default: runs/sweep_<sweep file name>")
  p.add_argument("--trials", type=int, help="the trial budget (overrides the sweep file)")
  p.add_argument("--parallel", type=int, default=1, help="worker processes on this machine")
  p.add_argument("--seeds", help="repeat each trial over these seeds, e.g. 0,1,2")
  p.add_argument("--storage", help="Optuna storage URL (default: SQLite in the workdir)")
  p.add_argument("--ledger", help="default: <workdir>/ledger.sqlite; '' = no ledger")
  p.add_argument("--worker", type=int, help=argparse.SUPPRESS)
  return p


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def main(argv: list[str] | None = None) -> int:
  """The command line; returns the exit status (exits with 2 and one sentence on a bad
  sweep). Restores the SIGTERM and SIGINT handlers it replaces (tests call it)."""
  argv = sys.argv[1:] if argv is None else argv
  handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    return _main(argv)
  finally:
    for s, handler in handlers.items():
      signal.signal(s, handler)


def _main(argv: list[str]) -> int:
  if argv and argv[0] == "compare":
    if len(argv) < 3 or not argv[1].endswith(".png"):
      _fail("Usage: python -m practice_jax.sweep compare OUT.png SWEEP_DIR [SWEEP_DIR...].")
    try:
      print(compare(argv[1], argv[2:]))
    except SweepError as e:
      _fail(str(e))
    return 0
  args, rest = _parser().parse_known_args(argv)
  extra = [a for a in rest if not a.startswith("--config.")]
  if extra:
    _fail(f"Unexpected arguments {' '.join(extra)}; pass settings as --config.key=value.")
  if args.parallel < 1:
    _fail(f"--parallel={args.parallel} must be at least 1.")
  args.workdir = args.workdir or os.path.join(
      "runs", "sweep_" + os.path.splitext(os.path.basename(args.sweep.split(":")[0]))[0])
  worker = args.worker
  try:
    config = load_config(args.config)
    fixed = _parse_fixed(config, rest)
    overlap = sorted(set(fixed) & set(_raw_space_keys(args.sweep)))
    if overlap:
      raise SweepError(f"config.{overlap[0]} is both set on the command line and searched; "
                       f"drop one.")
    spec = load_spec(args.sweep, config, args.seeds, args.trials, resolve_metric=False)
    os.makedirs(args.workdir, exist_ok=True)
    sweep = Sweep(args, spec, config, fixed)
    stored = sweep.stored_metric()
    if stored and (spec.metric in ("", stored[0]) and spec.direction in ("", stored[1])):
      spec.metric, spec.direction = stored   # a resumed sweep or a worker: checked before
    else:                                    # the task's metrics (imports JAX)
      spec.metric, spec.direction = _resolve_metric(config, spec.metric or None,
                                                    spec.direction or None)
    if worker is not None:   # a --parallel worker: the parent checked and made the study
      signal.signal(signal.SIGTERM, sweep.stop)
      signal.signal(signal.SIGINT, sweep.stop)
      sweep.work(worker)
      return 0
    study = sweep.study()
    sweep.check_study(study)
    with sweep.lock():
      recovered = sweep.recover(study)
  except SweepError as e:
    _fail(str(e))
  if recovered:
    print(f"[sweep {sweep.name}] re-running trial(s) {', '.join(map(str, recovered))} "
          f"left running by a stopped sweep, from their checkpoints.", flush=True)
  print(f"[sweep {sweep.name}] {spec.method} search of {spec.metric} ({spec.direction}), "
        f"{sweep.spent(study)} of {spec.trials} trials spent; results in {sweep.workdir}",
        flush=True)
  signal.signal(signal.SIGTERM, sweep.stop)
  signal.signal(signal.SIGINT, sweep.stop)
  if args.parallel == 1:
    sweep.work(0)
  else:
    workers = [subprocess.Popen([sys.executable, "-m", "practice_jax.sweep", *argv,
                                 f"--worker={i}"], preexec_fn=_die_with_parent)
               for i in range(args.parallel)]
    while any(w.poll() is None for w in workers):
      if sweep.stopping:
        for w in workers:
          if w.poll() is None:
            w.send_signal(signal.SIGTERM)
        for w in workers:
          w.wait()
        break
      time.sleep(0.5)
  if sweep.stopping:
    print(f"[sweep {sweep.name}] stopped; run the same command to continue.", file=sys.stderr)
    return 130
  report(sweep)
  return 0


def _raw_space_keys(sweep_path: str) -> list[str]:
  with contextlib.suppress(Exception):
    raw = _raw_spec(sweep_path)
    return [k.removeprefix("config.") for k in raw.get("space", {})]
  return []


if __name__ == "__main__":
  # Run the imported module, so that the sweep file's choice()/uniform() (imported from
  # practice_jax.sweep) are the classes the checks know.
  from practice_jax import sweep as _sweep
  sys.exit(_sweep.main())
