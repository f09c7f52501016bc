"""Hyperparameter sweeps (practice_jax/sweep.py): grid, random and TPE search run; a sweep
killed by SIGKILL resumes without repeating finished trials; bad sweep files are refused
in one sentence; the best config file and the PNG are written.

One test runs real trials (practice_jax.main on a generated CSV table). The others replace
the trial command with a stand-in that behaves like main.py (metrics.jsonl while it runs,
run.json at the end, SIGTERM saves and stops) but needs no JAX: each real trial costs
seconds of start-up on this machine.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, load_config
from practice_jax import sweep

FAKE_TRIAL = r'''
import json, math, os, signal, sys, time
args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
workdir = args["--workdir"]
os.makedirs(workdir, exist_ok=True)
with open(os.path.join(workdir, "starts.log"), "a") as f:
  f.write("start\n")
lr = float(args.get("--config.optimizer.learning_rate", "0.001"))
dropout = float(args.get("--config.model.dropout", "0.1"))
seed = int(args.get("--config.seed", "0"))
signal.signal(signal.SIGTERM, lambda *a: sys.exit(3))   # main.py: save and stop
path = os.path.join(workdir, "metrics.jsonl")
done = 0
if os.path.exists(path):
  with open(path) as f:
    done = sum(1 for line in f if line.strip())
steps = int(os.environ.get("FAKE_STEPS", "3"))
best = 1.0 - abs(math.log10(lr) + 2.5) / 4 - 0.1 * dropout + 0.01 * seed
for step in range(done + 1, steps + 1):
  time.sleep(float(os.environ.get("FAKE_STEP_S", "0")))
  with open(path, "a") as f:
    f.write(json.dumps({"step": step, "split": "validation",
                        "accuracy": best * step / steps, "time": time.time()}) + "\n")
with open(os.path.join(workdir, "run.json"), "w") as f:
  json.dump({"final": {"validation": {"accuracy": best}}}, f)
'''


def write_table(path, n=90, seed=0):
  rng = np.random.default_rng(seed)
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["a", "b", "label"])
    for i in range(n):
      c = i % 3
      w.writerow([f"{rng.normal(2.0 * c, 0.3):.3f}", f"{rng.normal(-c, 0.3):.3f}", f"k{c}"])
  return str(path)


def write_sweep(path, body: str):
  path.write_text("from practice_jax.sweep import choice, integer, loguniform, uniform\n\n"
                  "def get_sweep():\n  return " + body + "\n")
  return str(path)


def sweep_command(tmp_path, sweep_file, workdir, *extra):
  return [sys.executable, "-m", "practice_jax.sweep",
          f"--config={REPO / 'configs' / 'csv_classification.py'}", f"--sweep={sweep_file}",
          f"--workdir={workdir}", f"--config.data.path={tmp_path / 'table.csv'}", *extra]


@pytest.fixture
def fake_env(tmp_path, monkeypatch):
  """Trials run the stand-in; returns the environment for sweeps in a subprocess."""
  write_table(tmp_path / "table.csv")
  script = tmp_path / "fake_trial.py"
  script.write_text(FAKE_TRIAL)
  monkeypatch.setenv(sweep.TRIAL_COMMAND_ENV, f"{sys.executable} {script}")
  env = dict(os.environ)
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  return env


def sweep_here(cmd, capsys):
  """Runs the sweep command in this process (no second JAX start-up); returns stdout."""
  code = sweep.main(cmd[3:])
  out = capsys.readouterr().out
  assert code == 0, out
  return out


def run_sweep(cmd, env, **kw):
  return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
                        **kw)


def results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def starts(trial_dir) -> int:
  with open(os.path.join(trial_dir, "starts.log")) as f:
    return len(f.read().split())


def test_real_trial_runs_main_and_writes_a_runnable_best_config(tmp_path):
  """One real trial: main.py trains, the ledger records it, best_config.py loads."""
  write_table(tmp_path / "table.csv")
  sweep_file = write_sweep(tmp_path / "s.py", 'dict(method="random", trials=1, space={'
                           '"optimizer.learning_rate": loguniform(1e-3, 1e-2)})')
  workdir = tmp_path / "real"
  out = run_sweep(sweep_command(tmp_path, sweep_file, workdir, "--config.num_epochs=1",
                                "--config.batch_size=16"), dict(os.environ))
  assert out.returncode == 0, out.stderr[-3000:]
  r = results(workdir)
  assert [t["state"] for t in r["trials"]] == ["complete"]
  trial = r["trials"][0]
  with open(os.path.join(trial["workdir"], "run.json")) as f:
    final = json.load(f)["final"]["validation"]["accuracy"]
  assert trial["value"] == pytest.approx(final)
  assert r["metric"] == "validation/accuracy" and r["direction"] == "maximize"
  import sqlite3
  with sqlite3.connect(workdir / "ledger.sqlite") as db:
    notes = [n for (n,) in db.execute("SELECT note FROM runs")]
  assert notes == ["sweep real trial 0"]
  assert (workdir / "best_vs_trials.png").stat().st_size > 1000
  best = sweep.load_config(str(workdir / "best_config.py"))
  assert best.optimizer.learning_rate == pytest.approx(trial["params"]
                                                       ["optimizer.learning_rate"])
  assert best.num_epochs == 1.0 and best.data.path == str(tmp_path / "table.csv")


def test_grid_in_parallel_covers_the_grid_once(tmp_path, fake_env, capsys):
  sweep_file = write_sweep(tmp_path / "g.py", 'dict(method="grid", space={'
                           '"optimizer.learning_rate": loguniform(1e-3, 1e-2, points=2), '
                           '"model.dropout": choice(0.0, 0.5)})')
  workdir = tmp_path / "grid"
  out = sweep_here(sweep_command(tmp_path, sweep_file, workdir, "--parallel=2"), capsys)
  r = results(workdir)
  points = sorted((round(t["params"]["optimizer.learning_rate"], 6),
                   t["params"]["model.dropout"]) for t in r["trials"])
  assert points == [(0.001, 0.0), (0.001, 0.5), (0.01, 0.0), (0.01, 0.5)]
  assert all(t["state"] == "complete" for t in r["trials"])
  assert r["best"]["params"]["model.dropout"] == 0.0
  assert len(r["best_so_far"]) == 4 and r["best_so_far"][-1] == r["best"]["value"]
  assert "best: trial" in out


def test_random_with_seeds_reports_mean_and_std(tmp_path, fake_env, capsys):
  sweep_file = write_sweep(tmp_path / "r.py", 'dict(method="random", trials=2, space={'
                           '"optimizer.learning_rate": loguniform(1e-4, 1e-1)})')
  workdir = tmp_path / "random"
  out = sweep_here(sweep_command(tmp_path, sweep_file, workdir, "--seeds=0,1"), capsys)
  r = results(workdir)
  assert len(r["trials"]) == 2
  for t in r["trials"]:
    assert len(t["values"]) == 2 and t["values"][1] - t["values"][0] == pytest.approx(0.01)
    assert t["value"] == pytest.approx(np.mean(t["values"]))
    assert t["std"] == pytest.approx(0.005)
    assert os.path.isdir(os.path.join(t["workdir"], "seed_1"))
  assert "±" in out
  # Several sweeps in one picture and table: best value against trials spent.
  text = sweep.compare(str(tmp_path / "compare.png"), [str(workdir), str(workdir)])
  assert text.splitlines()[0] == "best validation/accuracy against trials spent"
  assert (tmp_path / "compare.png").stat().st_size > 1000


def test_tpe_then_sigkill_resumes_without_repeating_finished_trials(tmp_path, fake_env,
                                                                   capsys, monkeypatch):
  sweep_file = write_sweep(tmp_path / "t.py", 'dict(method="tpe", trials=4, space={'
                           '"optimizer.learning_rate": loguniform(1e-4, 1e-1), '
                           '"model.dropout": uniform(0.0, 0.5)})')
  workdir = tmp_path / "tpe"
  env = dict(fake_env, FAKE_STEP_S="0.4")
  sweep_proc = subprocess.Popen(sweep_command(tmp_path, sweep_file, workdir), env=env,
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 120
  # Kill it while trial 1 runs, after trial 0 has finished.
  while not (workdir / "trial_1" / "metrics.jsonl").exists():
    assert sweep_proc.poll() is None and time.time() < deadline
    time.sleep(0.1)
  sweep_proc.send_signal(signal.SIGKILL)
  sweep_proc.wait()
  assert (workdir / "trial_0" / "run.json").exists()
  assert not (workdir / "trial_1" / "run.json").exists()

  monkeypatch.setenv("FAKE_STEP_S", "0")
  out = sweep_here(sweep_command(tmp_path, sweep_file, workdir), capsys)
  assert "re-running trial(s) 1" in out
  r = results(workdir)
  assert [t["state"] for t in r["trials"]] == ["complete"] * 4
  assert starts(workdir / "trial_0") == 1               # finished: not repeated
  assert starts(workdir / "trial_1") == 2               # killed: resumed in its workdir
  resumed = [t for t in r["trials"] if t["workdir"] == str(workdir / "trial_1")]
  assert len(resumed) == 1 and resumed[0]["number"] != 1 and resumed[0]["trial"] == 1
  assert [t["trial"] for t in r["trials"]] == [0, 1, 3, 4]
  with open(workdir / "trial_1" / "metrics.jsonl") as f:
    assert [json.loads(line)["step"] for line in f] == [1, 2, 3]   # went on, not over
  # Run again: the budget is spent, nothing runs.
  assert "4 of 4 trials spent" in sweep_here(sweep_command(tmp_path, sweep_file, workdir),
                                             capsys)
  assert sum(starts(workdir / d) for d in os.listdir(workdir) if d.startswith("trial_")) == 5


def test_pruner_stops_hopeless_trials(tmp_path, fake_env, capsys, monkeypatch):
  good, bad = (3e-3, 2e-3), 1e-1
  # A grid order whose first two (never pruned) trials are the good ones.
  seed = next(s for s in range(100) if sorted(g[0] for g in sweep._GridSampler(
      {"optimizer.learning_rate": [*good, bad]}, seed=s)._all_grids[:2]) == sorted(good))
  sweep_file = write_sweep(tmp_path / "p.py", f'dict(method="grid", pruner="median", '
                           f'sampler_seed={seed}, space={{"optimizer.learning_rate": '
                           f'choice({good[0]}, {good[1]}, {bad})}})')
  workdir = tmp_path / "pruned"
  monkeypatch.setenv("FAKE_STEP_S", "0.5")
  monkeypatch.setenv("FAKE_STEPS", "5")
  sweep_here(sweep_command(tmp_path, sweep_file, workdir), capsys)
  states = {t["params"]["optimizer.learning_rate"]: t for t in results(workdir)["trials"]}
  assert states[good[0]]["state"] == states[good[1]]["state"] == "complete"
  assert states[bad]["state"] == "pruned"
  with open(os.path.join(states[bad]["workdir"], "metrics.jsonl")) as f:
    assert len(f.readlines()) < 5          # stopped before its end


def config():
  c = load_config("csv_classification")
  c.data.path = "unused.csv"
  return c


@pytest.mark.parametrize("body, expected", [
    ('dict(method="bayes", space={"batch_size": choice(8, 16)})',
     "method='bayes' is not one of grid, random, tpe."),
    ('dict(method="tpe", trials=3, space={"optimizer.lerning_rate": uniform(0, 1)})',
     "Unknown config key config.optimizer.lerning_rate: did you mean "
     "config.optimizer.learning_rate?"),
    ('dict(method="tpe", trials=3, space={"optimizer": choice(1, 2)})',
     "config.optimizer is a section, not a setting; sweep one of its keys, e.g. "
     "config.optimizer."),
    ('dict(method="random", trials=3, space={"optimizer.learning_rate": loguniform(0, 1)})',
     "config.optimizer.learning_rate: loguniform(0, 1) needs low above 0."),
    ('dict(method="random", trials=3, space={"model.dropout": uniform(0.5, 0.1)})',
     "config.model.dropout: uniform(0.5, 0.1) needs low below high."),
    ('dict(method="grid", space={"model.dropout": uniform(0.0, 0.5)})',
     "Grid search needs a finite set of values for config.model.dropout: give "
     "uniform(0.0, 0.5, points=N) or choice(...)."),
    ('dict(method="random", trials=3, space={"batch_size": uniform(8, 64)})',
     "config.batch_size is an int (default 32), not a float; use integer(...)."),
    ('dict(method="random", trials=3, space={"batch_size": integer(64, 8)})',
     "config.batch_size: integer(64, 8) has low above high."),
    ('dict(method="random", space={"batch_size": integer(8, 64)})',
     "random search needs a budget: trials=N in the sweep file or --trials=N."),
    ('dict(method="tpe", trials=2, metric="validation/f1", space={"batch_size": choice(8)})',
     "metric='validation/f1': the task 'table_classification' reports accuracy, loss."),
    ('dict(method="tpe", trials=2, pruner="median", seeds=(0, 1), '
     'space={"batch_size": choice(8)})',
     "Pruning follows one run per trial; use one seed or pruner=None."),
    ('dict(method="tpe", trials=2, space={"model.activation": choice("relu", 3)})',
     "config.model.activation is a str (default 'relu'); choice value 3 is int."),
    ('dict(method="tpe", trials=2, budget=3, space={"batch_size": choice(8)})',
     "unknown key 'budget'"),
    ('[1, 2]', "must return a dict, not a list."),
])
def test_bad_sweep_files_are_refused_in_one_sentence(tmp_path, body, expected):
  path = write_sweep(tmp_path / "bad.py", body)
  with pytest.raises(sweep.SweepError) as e:
    sweep.load_spec(path, config())
  message = str(e.value)
  assert expected in message and "\n" not in message, message


def test_command_line_refuses_a_bad_sweep_before_any_trial(tmp_path, fake_env):
  path = write_sweep(tmp_path / "bad.py", 'dict(method="tpe", trials=2, '
                     'space={"optimiser.learning_rate": uniform(0.1, 1.0)})')
  out = run_sweep(sweep_command(tmp_path, path, tmp_path / "w"), fake_env)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines() == [
      "error: Unknown config key config.optimiser.learning_rate: did you mean "
      "config.optimizer.learning_rate?"]
  assert not (tmp_path / "w").exists()


def test_grid_values_and_the_example_sweep_file():
  assert sweep.grid_values(sweep.loguniform(1e-4, 1e-2, points=3)) == pytest.approx(
      [1e-4, 1e-3, 1e-2])
  assert sweep.grid_values(sweep.uniform(0.0, 0.5, points=2)) == [0.0, 0.5]
  assert sweep.grid_values(sweep.integer(2, 4)) == [2, 3, 4]
  spec = sweep.load_spec(str(REPO / "sweeps" / "mnist_mlp.py"), load_config("mnist_mlp"))
  assert spec.method == "tpe" and spec.trials == 8
  assert spec.metric == "validation/accuracy" and spec.direction == "maximize"
  spec = sweep.load_spec(str(REPO / "sweeps" / "shakespeare_gpt_cpu.py"),
                         load_config("shakespeare_gpt_cpu"))
  assert spec.metric == "validation/loss" and spec.direction == "minimize"
  assert "optimizer.ema_decay" in spec.space and spec.trials == 16
