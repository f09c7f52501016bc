"""The ledger: every training run recorded in one embedded SQLite database.

Each row is one attempt: its experiment (the config file's name), the full config and how
it differs from the config file's defaults, the code version (git commit, dirty or not),
the seed, the machine, every evaluation (metrics.jsonl), the final metrics, the wall time,
whether it met the config's target (``config.target``) and when, and the user's note
(``python -m practice_jax.main ... --note "trying dropout 0.3"``).

The ledger holds copies, not references: deleting or restarting a workdir leaves its rows
whole. It lives by default beside the runs (``<parent of the workdir>/ledger.sqlite``, so
``runs/ledger.sqlite`` for the default workdirs); ``--ledger=PATH`` chooses another file
and ``--ledger=`` turns it off. Several processes may write at once (a sweep's trials):
the database is in WAL mode, every write is one ``BEGIN IMMEDIATE`` transaction, and a
writer waits (busy timeout) instead of failing. WAL needs a local file system: on NFS,
put the ledger on a local disk.

Reading the ledger needs no JAX: ``python -m practice_jax.practice`` stays quick.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib.util
import json
import math
import os
import platform
import re
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from practice_jax.reporting import writers

FILE_NAME = "ledger.sqlite"
RUN_FILE = "run.json"          # reporting/records.py writes it (imports JAX, so not imported)
CONFIG_FILE = "config.json"    # workdir.py writes it
BUSY_TIMEOUT_S = 60.0
CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  run_key TEXT NOT NULL UNIQUE,          -- workdir + start time: one row per attempt
  experiment TEXT NOT NULL,
  config_file TEXT,
  workdir TEXT NOT NULL,
  status TEXT NOT NULL,                  -- finished | diverged | unfinished
  started TEXT, finished TEXT,
  config TEXT NOT NULL,                  -- JSON
  config_diff TEXT NOT NULL,             -- JSON {key: [file default, this run]}
  code_version TEXT, code_commit TEXT, code_dirty INTEGER,
  seed INTEGER,
  machine TEXT NOT NULL,                 -- JSON
  final TEXT NOT NULL,                   -- JSON {evaluator: {metric: value}}
  metric_info TEXT NOT NULL,             -- JSON {metric: {higher_is_better, percent}}
  monitored_metric TEXT,
  monitored_value REAL,                  -- final value of the monitored metric
  best_value REAL,                       -- its best periodic evaluation
  wall_time_s REAL, steps INTEGER, steps_per_epoch INTEGER,
  target TEXT NOT NULL DEFAULT '',
  target_met INTEGER,                    -- 1, 0, or NULL (no target / not measurable)
  target_time_s REAL, target_step INTEGER,
  note TEXT NOT NULL DEFAULT '',
  source TEXT NOT NULL,                  -- training | import
  recorded TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_experiment ON runs (experiment);
CREATE INDEX IF NOT EXISTS runs_workdir ON runs (workdir);
CREATE TABLE IF NOT EXISTS evaluations (
  run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
  step INTEGER NOT NULL, split TEXT NOT NULL, name TEXT NOT NULL, value REAL,
  time REAL
);
CREATE INDEX IF NOT EXISTS evaluations_run ON evaluations (run_id);
CREATE TABLE IF NOT EXISTS targets (
  run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
  target TEXT NOT NULL, met INTEGER, step INTEGER, time_s REAL
);
"""


# ---------------------------------------------------------------------------- targets

_TARGET = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*(%?)\s*$")
_OPS = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b, "<": lambda a, b: a < b}


@dataclasses.dataclass(frozen=True)
class Target:
  key: str          # 'evaluator/metric'
  op: str
  value: float

  def met_by(self, value: float) -> bool:
    return value is not None and math.isfinite(value) and _OPS[self.op](value, self.value)

  def __str__(self) -> str:
    return f"{self.key}{self.op}{self.value:g}"


def parse_targets(text: str) -> list[Target]:
  """'validation/accuracy>=0.99' (or '99%'; 'accuracy' means the validation one; several
  separated by commas) -> Targets. Raises ValueError with one sentence."""
  out = []
  for part in filter(str.strip, (text or "").split(",")):
    match = _TARGET.match(part)
    if not match:
      raise ValueError(f"config.target={text!r} is not of the form "
                       f"'validation/accuracy>=0.99' (metric, >= <= > or <, a number).")
    key, op, number, percent = match.groups()
    try:
      value = float(number) / (100.0 if percent else 1.0)
    except ValueError:
      raise ValueError(f"config.target={text!r}: {number!r} is not a number.") from None
    out.append(Target(key if "/" in key else f"validation/{key}", op, value))
  return out


def check_target(config) -> str | None:
  """One sentence if config.target is malformed or names a metric the task does not
  report, else None (validation.py raises it before anything is loaded)."""
  text = config.get("target", "") or ""
  try:
    targets = parse_targets(text)
  except ValueError as e:
    return str(e)
  from practice_jax import tasks
  metrics = tasks.get(config.task.name).METRICS
  for target in targets:
    name = target.key.rpartition("/")[2]
    if name not in metrics:
      return (f"config.target={text!r} names the metric {name!r}, which the "
              f"{config.task.name} task does not report; it reports "
              f"{', '.join(sorted(metrics))}.")
  return None


def evaluate_targets(targets: list[Target], records: list[dict], origin: float | None
                     ) -> list[dict[str, Any]]:
  """For each target: met (True/False, None when the run has no such metric), and the
  step and seconds since `origin` of the first evaluation that met it."""
  results = []
  for target in targets:
    split, _, name = target.key.rpartition("/")
    seen = [r for r in sorted(records, key=lambda r: (r["step"], r.get("time", 0)))
            if r.get("split") == split and name in r]
    hit = next((r for r in seen if target.met_by(r[name])), None)
    results.append({
        "target": str(target), "met": (hit is not None) if seen else None,
        "step": hit["step"] if hit else None,
        "time_s": round(hit["time"] - origin, 2) if hit and origin is not None
        and "time" in hit else None})
  return results


# ------------------------------------------------------------------------------- runs

@dataclasses.dataclass
class Run:
  """One attempt, as the ledger holds it (or as read from a workdir not yet recorded)."""
  experiment: str
  workdir: str
  status: str
  config: dict[str, Any]
  config_diff: dict[str, list[Any]]
  final: dict[str, dict[str, float]]
  metric_info: dict[str, dict[str, bool]]
  monitored_metric: str | None
  records: list[dict[str, Any]]
  machine: dict[str, Any]
  started: str | None = None
  finished: str | None = None
  config_file: str | None = None
  code_version: str | None = None
  code_commit: str | None = None
  code_dirty: bool | None = None
  seed: int | None = None
  wall_time_s: float | None = None
  steps: int | None = None
  steps_per_epoch: int | None = None
  target: str = ""
  targets: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  note: str = ""
  source: str = "training"
  id: int | None = None
  recorded: str | None = None

  @property
  def label(self) -> str:
    return f"#{self.id}" if self.id is not None else os.path.basename(self.workdir)

  def higher_is_better(self, name: str | None = None) -> bool:
    name = name or (self.monitored_metric or "/").rpartition("/")[2]
    return bool(self.metric_info.get(name, {}).get("higher_is_better", True))

  def percent(self, name: str) -> bool:
    return bool(self.metric_info.get(name.rpartition("/")[2], {}).get("percent", False))

  def series(self, split: str, name: str) -> tuple[list[int], list[float]]:
    points = sorted((r["step"], r[name]) for r in self.records
                    if r.get("split") == split and r.get(name) is not None)
    return [p[0] for p in points], [p[1] for p in points]

  def final_value(self, key: str | None = None) -> float | None:
    evaluator, _, name = (key or self.monitored_metric or "/").rpartition("/")
    value = self.final.get(evaluator, {}).get(name)
    if value is None:       # a diverged run has no final metrics: its last evaluation
      values = self.series(evaluator, name)[1]
      value = values[-1] if values else None
    return value

  def best_value(self, key: str | None = None) -> float | None:
    evaluator, _, name = (key or self.monitored_metric or "/").rpartition("/")
    values = [v for v in self.series(evaluator, name)[1] if math.isfinite(v)]
    if not values:
      return None
    return max(values) if self.higher_is_better(name) else min(values)

  @property
  def target_met(self) -> bool | None:
    if not self.targets or any(t["met"] is None for t in self.targets):
      return None
    return all(t["met"] for t in self.targets)

  @property
  def target_time_s(self) -> float | None:
    times = [t["time_s"] for t in self.targets]
    return max(times) if self.target_met and None not in times else None

  @property
  def target_step(self) -> int | None:
    steps = [t["step"] for t in self.targets]
    return max(steps) if self.target_met and None not in steps else None

  @property
  def run_key(self) -> str:
    return f"{self.workdir}@{self.started}"


def _json_normal(value: Any) -> Any:
  """Tuples as lists, odd values as strings: how the config looks once stored."""
  return json.loads(json.dumps(value, default=str))


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out: dict[str, Any] = {}
    for key, value in tree.items():
      out.update(flatten(value, f"{prefix}{key}."))
    return out
  return {prefix[:-1]: tree}


def config_difference(default: dict[str, Any], config: dict[str, Any]
                      ) -> dict[str, list[Any]]:
  """{key: [default, value]} for every key of `config` whose value differs (keys added to
  the code after the run was made are not differences)."""
  a, b = flatten(_json_normal(default)), flatten(_json_normal(config))
  return {k: [a.get(k), b[k]] for k in sorted(b) if a.get(k) != b[k]}


def load_config_file(path: str) -> dict[str, Any]:
  """The config file's get_config(), as a plain dict."""
  spec = importlib.util.spec_from_file_location("ledger_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return _json_normal(module.get_config().to_dict())


def _guess_config_file(workdir: str, config: dict[str, Any]) -> str | None:
  """For an imported workdir: configs/<workdir name>.py if there is one, else the config
  file in configs/ whose defaults differ from the run's config in the fewest keys."""
  by_name = CONFIGS_DIR / f"{os.path.basename(os.path.normpath(workdir))}.py"
  if by_name.is_file():
    return str(by_name)
  best, best_count = None, None
  for path in sorted(CONFIGS_DIR.glob("*.py")):
    try:
      count = len(config_difference(load_config_file(str(path)), config))
    except Exception:  # noqa: BLE001 - a config that does not load here is not the one
      continue
    if best_count is None or count < best_count:
      best, best_count = str(path), count
  return best


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _machine(environment: dict[str, Any], here: bool) -> dict[str, Any]:
  """The machine a run used: from its run.json, with what this process knows when the
  run happened here (CPU model, device kind)."""
  devices = environment.get("devices") or []
  machine = {"host": environment.get("host"), "backend": environment.get("backend"),
             "device_count": len(devices) or None, "cpu_count": environment.get("cpu_count"),
             "cpu": environment.get("processor"), "device_kind": None}
  if here:
    machine["cpu"] = _cpu_model()
    machine["host"] = machine["host"] or platform.node()
    jax = sys.modules.get("jax")
    if jax is not None:
      with contextlib.suppress(Exception):
        machine["device_kind"] = jax.devices()[0].device_kind
        machine["device_count"] = jax.device_count()
        machine["backend"] = jax.default_backend()
  return machine


def _code(version: str | None) -> tuple[str | None, bool | None]:
  """'abc1234+dirty' -> ('abc1234', True); a version without git -> (None, None)."""
  if not version or " " in version:
    return None, None
  commit, _, flag = version.partition("+")
  return commit, flag == "dirty"


def _iso(t: float) -> str:
  return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(
      timespec="seconds")


def _unix(iso: str | None) -> float | None:
  try:
    return datetime.datetime.fromisoformat(iso).timestamp() if iso else None
  except ValueError:
    return None


def read_workdir(workdir: str, config_file: str | None = None, experiment: str | None = None,
                 note: str = "", source: str = "import", status: str | None = None) -> Run:
  """The attempt a workdir holds: from run.json (a finished run) or, for a run that
  diverged or has not finished, config.json; with its metrics.jsonl. Raises ValueError
  in one sentence."""
  workdir = os.path.abspath(workdir)
  record = None
  with contextlib.suppress(OSError, ValueError):
    with open(os.path.join(workdir, RUN_FILE), encoding="utf-8") as f:
      record = json.load(f)
  try:
    records = writers.read_metrics(workdir)
  except (OSError, ValueError) as e:
    raise ValueError(f"{workdir}/metrics.jsonl cannot be read ({e}).") from None
  if record is None:
    try:
      with open(os.path.join(workdir, CONFIG_FILE), encoding="utf-8") as f:
        config = json.load(f)
    except (OSError, ValueError):
      raise ValueError(f"{workdir} holds no practice_jax run (no {RUN_FILE} or "
                       f"{CONFIG_FILE}).") from None
    if not records:
      raise ValueError(f"{workdir} holds a run that has not evaluated anything yet.")
    times = [r["time"] for r in records if "time" in r]
    record = {"config": config, "final": {}, "seed": config.get("seed"),
              "started": _iso(min(times)) if times else None,
              "finished": _iso(max(times)) if times else None,
              "wall_time_s": round(max(times) - min(times), 2) if len(times) > 1 else None,
              "steps": max(r["step"] for r in records)}
    # No run.json: the run diverged (a value is not finite), or has not finished.
    broken = any(isinstance(v, float) and not math.isfinite(v)
                 for r in records for v in r.values())
    status = status or ("diverged" if broken else "unfinished")
  config = _json_normal(record["config"])
  if config_file is None:
    config_file = _guess_config_file(workdir, config)
  try:
    defaults = load_config_file(config_file) if config_file else {}
  except Exception:  # noqa: BLE001 - a config file changed since: no difference then
    defaults = {}
  info = record.get("metrics") or {}
  if not info:   # a diverged run: the task's directions, if it can be imported here
    with contextlib.suppress(Exception):
      from practice_jax import tasks
      info = {k: dataclasses.asdict(m) for k, m in
              tasks.get(config["task"]["name"]).METRICS.items()}
  monitored = record.get("monitored_metric")
  if monitored is None:
    metric = (config.get("early_stopping") or {}).get("metric") or ""
    with contextlib.suppress(Exception):
      from practice_jax import tasks
      metric = metric or tasks.get(config["task"]["name"]).MONITOR
    monitored = (metric if "/" in metric else f"validation/{metric}") if metric else None
  environment = record.get("environment") or {}
  if source == "training" and "code_version" not in environment:   # a diverged run
    with contextlib.suppress(Exception):
      from practice_jax.reporting import records as run_records
      environment = {**environment, "code_version": run_records.code_version()}
  commit, dirty = _code(environment.get("code_version"))
  experiment = experiment or (Path(config_file).stem if config_file
                              else os.path.basename(workdir))
  times = [r["time"] for r in records if "time" in r]
  origin = _unix(record.get("started"))
  if origin is None or (times and origin > min(times)):   # resumed: from the first record
    origin = min(times) if times else None
  run = Run(
      experiment=experiment, workdir=workdir, status=status or "finished", config=config,
      config_diff=config_difference(defaults, config) if defaults else {},
      final=record.get("final") or {}, metric_info=info, monitored_metric=monitored,
      records=records, machine=_machine(environment, here=source == "training"),
      started=record.get("started"), finished=record.get("finished"),
      config_file=os.path.abspath(config_file) if config_file else None,
      code_version=environment.get("code_version"), code_commit=commit, code_dirty=dirty,
      seed=record.get("seed"), wall_time_s=record.get("wall_time_s"),
      steps=record.get("steps"), steps_per_epoch=record.get("steps_per_epoch"),
      target=config.get("target", "") or "", note=note, source=source)
  with contextlib.suppress(ValueError):
    run.targets = evaluate_targets(parse_targets(run.target), records, origin)
  return run


# ----------------------------------------------------------------------------- ledger

def default_path(workdir: str) -> str:
  return os.path.join(os.path.dirname(os.path.abspath(workdir)), FILE_NAME)


class Ledger:
  """The database at `path` (created on first use)."""

  def __init__(self, path: str, timeout_s: float = BUSY_TIMEOUT_S):
    self.path = os.path.abspath(path)
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    self._db = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None)
    self._db.row_factory = sqlite3.Row
    self._db.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
    self._db.execute("PRAGMA foreign_keys = ON")
    deadline = time.monotonic() + timeout_s
    while True:     # switching to WAL takes a lock that the busy handler may not wait for
      try:
        self._db.execute("PRAGMA journal_mode = WAL")
        with self._write() as db:
          for statement in filter(str.strip, _SCHEMA.split(";")):
            db.execute(statement)
        break
      except sqlite3.OperationalError as e:
        if "locked" not in str(e) and "busy" not in str(e) or time.monotonic() > deadline:
          raise
        time.sleep(0.05)

  def close(self) -> None:
    self._db.close()

  def __enter__(self) -> Ledger:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  @contextlib.contextmanager
  def _write(self):
    """One transaction that takes the write lock at its start (no upgrade deadlocks)."""
    self._db.execute("BEGIN IMMEDIATE")
    try:
      yield self._db
    except BaseException:
      self._db.execute("ROLLBACK")
      raise
    self._db.execute("COMMIT")

  def add(self, run: Run) -> int:
    """Records `run`; the same attempt recorded again (same workdir and start) replaces
    its row, keeping its id and, if `run` has none, its note. Returns the id."""
    best = run.best_value()
    row = {
        "run_key": run.run_key, "experiment": run.experiment, "config_file": run.config_file,
        "workdir": run.workdir, "status": run.status, "started": run.started,
        "finished": run.finished, "config": json.dumps(run.config),
        "config_diff": json.dumps(run.config_diff), "code_version": run.code_version,
        "code_commit": run.code_commit,
        "code_dirty": None if run.code_dirty is None else int(run.code_dirty),
        "seed": run.seed, "machine": json.dumps(run.machine), "final": json.dumps(run.final),
        "metric_info": json.dumps(run.metric_info), "monitored_metric": run.monitored_metric,
        "monitored_value": _finite(run.final_value()), "best_value": _finite(best),
        "wall_time_s": run.wall_time_s, "steps": run.steps,
        "steps_per_epoch": run.steps_per_epoch, "target": run.target,
        "target_met": None if run.target_met is None else int(run.target_met),
        "target_time_s": run.target_time_s, "target_step": run.target_step,
        "note": run.note, "source": run.source,
        "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds")}
    columns = ", ".join(row)
    updates = ", ".join(f"{k} = excluded.{k}" for k in row
                        if k not in ("run_key", "note", "status"))
    with self._write() as db:
      db.execute(
          f"INSERT INTO runs ({columns}) VALUES ({', '.join(':' + k for k in row)}) "
          f"ON CONFLICT (run_key) DO UPDATE SET {updates}, note = CASE WHEN "
          f"excluded.note != '' THEN excluded.note ELSE runs.note END, status = CASE WHEN "
          # an import cannot tell a diverged run from a stopped one; training could
          f"excluded.status = 'unfinished' THEN runs.status ELSE excluded.status END", row)
      run_id = db.execute("SELECT id FROM runs WHERE run_key = ?",
                          (run.run_key,)).fetchone()[0]
      db.execute("DELETE FROM evaluations WHERE run_id = ?", (run_id,))
      db.execute("DELETE FROM targets WHERE run_id = ?", (run_id,))
      db.executemany(
          "INSERT INTO evaluations VALUES (?, ?, ?, ?, ?, ?)",
          [(run_id, r["step"], r.get("split", "train"), name, _finite(value),
            r.get("time")) for r in run.records for name, value in r.items()
           if name not in ("step", "split", "time") and isinstance(value, (int, float))])
      db.executemany("INSERT INTO targets VALUES (?, ?, ?, ?, ?)",
                     [(run_id, t["target"], None if t["met"] is None else int(t["met"]),
                       t["step"], t["time_s"]) for t in run.targets])
    run.id = run_id
    return run_id

  def set_note(self, run_id: int, note: str) -> None:
    with self._write() as db:
      db.execute("UPDATE runs SET note = ? WHERE id = ?", (note, run_id))

  def _run(self, row: sqlite3.Row) -> Run:
    records: dict[tuple, dict] = {}
    for step, split, name, value, t in self._db.execute(
        "SELECT step, split, name, value, time FROM evaluations WHERE run_id = ? "
        "ORDER BY rowid", (row["id"],)):
      record = records.setdefault((step, split, t), {"step": step, "split": split})
      record[name] = float("nan") if value is None else value
      if t is not None:
        record["time"] = t
    targets = [dict(r) for r in self._db.execute(
        "SELECT target, met, step, time_s FROM targets WHERE run_id = ? ORDER BY rowid",
        (row["id"],))]
    for t in targets:
      t["met"] = None if t["met"] is None else bool(t["met"])
    return Run(
        experiment=row["experiment"], workdir=row["workdir"], status=row["status"],
        config=json.loads(row["config"]), config_diff=json.loads(row["config_diff"]),
        final=json.loads(row["final"]), metric_info=json.loads(row["metric_info"]),
        monitored_metric=row["monitored_metric"], records=list(records.values()),
        machine=json.loads(row["machine"]), started=row["started"],
        finished=row["finished"], config_file=row["config_file"],
        code_version=row["code_version"], code_commit=row["code_commit"],
        code_dirty=None if row["code_dirty"] is None else bool(row["code_dirty"]),
        seed=row["seed"], wall_time_s=row["wall_time_s"], steps=row["steps"],
        steps_per_epoch=row["steps_per_epoch"], target=row["target"], targets=targets,
        note=row["note"], source=row["source"], id=row["id"], recorded=row["recorded"])

  def runs(self, experiment: str | None = None) -> list[Run]:
    """Every recorded attempt (of `experiment`), oldest first."""
    query = "SELECT * FROM runs" + (" WHERE experiment = ?" if experiment else "")
    rows = self._db.execute(query + " ORDER BY COALESCE(started, recorded), id",
                            (experiment,) if experiment else ()).fetchall()
    return [self._run(row) for row in rows]

  def experiments(self) -> list[str]:
    return [r[0] for r in self._db.execute(
        "SELECT DISTINCT experiment FROM runs ORDER BY experiment")]

  def get(self, run_id: int) -> Run | None:
    row = self._db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
    return self._run(row) if row else None

  def latest_in(self, workdir: str) -> Run | None:
    row = self._db.execute(
        "SELECT * FROM runs WHERE workdir = ? ORDER BY COALESCE(started, recorded) DESC, "
        "id DESC LIMIT 1", (os.path.abspath(workdir),)).fetchone()
    return self._run(row) if row else None

  def integrity(self) -> str:
    return self._db.execute("PRAGMA integrity_check").fetchone()[0]


def _finite(value: float | None) -> float | None:
  """SQLite stores NaN as NULL; infinities are kept."""
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return None
  return float(value)


# ------------------------------------------------------------------ the training hook

def record_workdir(workdir: str, config_file: str | None, note: str = "",
                   ledger_path: str | None = None, status: str | None = None) -> int | None:
  """main.py's hook after a run: records the attempt in `workdir` (process 0 only).
  `ledger_path` None = the default beside the workdir, '' = no ledger. Never raises: a
  ledger that cannot be written is one line of warning, the run itself is untouched."""
  if ledger_path == "":
    return None
  jax = sys.modules.get("jax")
  if jax is not None and jax.process_index() != 0:
    return None
  path = ledger_path or default_path(workdir)
  try:
    run = read_workdir(workdir, config_file, note=note, source="training", status=status)
    with Ledger(path) as ledger:
      run_id = ledger.add(run)
    met = run.target_met
    target = ("" if met is None else
              f"; target {run.target} {'met' if met else 'not met'}"
              + (f" after {run.target_time_s:.1f} s (step {run.target_step})"
                 if met and run.target_time_s is not None else ""))
    print(f"Recorded as run #{run_id} of {run.experiment} in {path}{target}.")
    return run_id
  except Exception as e:  # noqa: BLE001 - the ledger must never fail a training run
    print(f"warning: the run was not recorded in the ledger {path} "
          f"({type(e).__name__}: {e}); its results are safe in {workdir}; record it "
          f"later with python -m practice_jax.practice import {workdir}.", file=sys.stderr)
    return None
