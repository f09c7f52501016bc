"""The practice loop: the ledger (concurrent writers, import, deleted workdirs), targets,
and `practice` compare/feedback/history on constructed runs whose diagnosis is known."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO, load_config
from practice_jax import ledger as ledger_lib
from practice_jax import practice
from practice_jax.ledger import Ledger

MLP = str(REPO / "configs" / "mnist_mlp.py")
T0 = 1_800_000_000.0     # the first record's time in the constructed runs
STEPS_PER_EPOCH = 100


@pytest.fixture(scope="module")
def mlp_config():
  return json.loads(json.dumps(load_config("mnist_mlp").to_dict(), default=str))


def make_run(workdir, config, train_loss, val_loss, val_acc, *, train_acc=None,
             started_offset=0.0, diverged=False, **overrides):
  """A workdir as a run leaves it: metrics.jsonl (a validation evaluation before
  training and after each epoch, train records at each epoch end) and run.json (or, for
  a diverged run, only config.json). Epoch e ends at step 100 e, 10 s after the start."""
  config = json.loads(json.dumps(config))
  for key, value in overrides.items():
    node = config
    *parents, last = key.split("__")
    for part in parents:
      node = node[part]
    node[last] = value
  os.makedirs(workdir, exist_ok=True)
  t0 = T0 + started_offset
  records = [{"step": 0, "split": "validation", "loss": val_loss[0], "accuracy": val_acc[0],
              "time": t0}]
  train_acc = train_acc or [min(0.999, a + 0.01) for a in val_acc[1:]]
  for epoch in range(1, len(val_loss)):
    step, t = epoch * STEPS_PER_EPOCH, t0 + 10.0 * epoch
    if epoch - 1 < len(train_loss):
      records.append({"step": step, "split": "train", "loss": train_loss[epoch - 1],
                      "accuracy": train_acc[epoch - 1], "time": t})
    if not diverged or epoch < len(val_loss) - 1:
      records.append({"step": step, "split": "validation", "loss": val_loss[epoch],
                      "accuracy": val_acc[epoch], "time": t + 0.5})
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(config, f)
  if diverged:
    return workdir
  steps = (len(val_loss) - 1) * STEPS_PER_EPOCH
  iso = ledger_lib._iso
  record = {
      "config": config, "seed": config["seed"], "workdir": str(workdir),
      "started": iso(t0), "finished": iso(t0 + 10.0 * len(val_loss)),
      "wall_time_s": 10.0 * len(val_loss), "steps": steps,
      "epochs": steps / STEPS_PER_EPOCH, "steps_per_epoch": STEPS_PER_EPOCH,
      "early_stopped": False, "num_parameters": 1000,
      "final": {"validation": {"loss": val_loss[-1], "accuracy": val_acc[-1]},
                "test": {"loss": val_loss[-1] * 1.02, "accuracy": val_acc[-1] - 0.001}},
      "metrics": {"loss": {"higher_is_better": False, "percent": False},
                  "accuracy": {"higher_is_better": True, "percent": True}},
      "monitored_metric": "validation/accuracy",
      "evaluated_checkpoint": {"which": "last", "step": steps},
      "environment": {"code_version": "abc1234+dirty", "backend": "cpu",
                      "devices": ["cpu:0"], "processor": "x86_64", "cpu_count": 2,
                      "host": "elsewhere"},
  }
  with open(os.path.join(workdir, "run.json"), "w") as f:
    json.dump(record, f)
  return workdir


# Curves whose diagnosis is known.
def healthy(config, workdir, **kw):
  return make_run(workdir, config, [0.6, 0.3, 0.2, 0.15, 0.12],
                  [2.3, 0.5, 0.3, 0.2, 0.15, 0.12], [0.1, 0.85, 0.91, 0.94, 0.955, 0.965], **kw)


def overfitting(config, workdir, **kw):
  # Validation loss lowest after epoch 2, then up 60%; train loss keeps falling.
  return make_run(workdir, config, [0.4, 0.15, 0.06, 0.02, 0.008, 0.003],
                  [2.3, 0.2, 0.12, 0.14, 0.16, 0.18, 0.2],
                  [0.1, 0.94, 0.962, 0.963, 0.962, 0.962, 0.961],
                  train_acc=[0.9, 0.96, 0.985, 0.995, 0.999, 1.0], **kw)


def plateau(config, workdir, **kw):
  # Accuracy reaches 95.1% at epoch 2 and stays there for five more epochs.
  return make_run(workdir, config, [0.3, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2],
                  [2.3, 0.25, 0.19, 0.19, 0.19, 0.19, 0.19, 0.19],
                  [0.1, 0.93, 0.951, 0.9508, 0.9512, 0.9509, 0.9511, 0.951],
                  schedule__name="constant", **kw)


def diverging(config, workdir, **kw):
  return make_run(workdir, config, [0.9, 3.5, float("nan")], [2.3, 0.8, 9.0, 0.0],
                  [0.1, 0.7, 0.1, 0.0], diverged=True, optimizer__learning_rate=0.3, **kw)


def cli(ledger_path, *args) -> str:
  return practice.run_command([f"--ledger={ledger_path}", *args])


def kinds(findings):
  return {f.kind for f in findings}


# ------------------------------------------------------------------------------ ledger

_WRITER = textwrap.dedent("""
    import sys, time
    from practice_jax.ledger import Ledger, Run
    path, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    while time.time() < float(sys.argv[4]):      # both writers start together
      time.sleep(0.01)
    for i in range(n):
      with Ledger(path) as ledger:
        records = [{"step": s, "split": "validation", "accuracy": 0.5 + s / 1000,
                    "loss": 1.0 / (s + 1), "time": 1.0e9 + s} for s in range(50)]
        ledger.add(Run(experiment=name, workdir=f"/runs/{name}/{i}", status="finished",
                       config={"seed": i}, config_diff={}, final={"validation": {
                           "accuracy": 0.5 + i / 100}},
                       metric_info={"accuracy": {"higher_is_better": True,
                                                 "percent": True}},
                       monitored_metric="validation/accuracy", records=records,
                       machine={}, started=f"2026-01-01T00:00:{i:02d}", note=f"{name} {i}"))
      time.sleep(0.02)                           # let the other writer in between
""")


def test_two_concurrent_writer_processes_lose_nothing(tmp_path):
  path = str(tmp_path / "ledger.sqlite")
  script = tmp_path / "writer.py"
  script.write_text(_WRITER)
  import time
  start = str(time.time() + 2.0)
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  procs = [subprocess.Popen([sys.executable, str(script), path, name, "25", start], env=env,
                            stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
  for p in procs:
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
  with Ledger(path) as ledger:
    assert ledger.integrity() == "ok"
    runs = ledger.runs()
    assert sorted(r.note for r in runs) == sorted(f"{n} {i}" for n in "ab" for i in range(25))
    assert all(len(r.records) == 50 for r in runs)
    assert ledger.experiments() == ["a", "b"]
    assert ledger._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_import_then_delete_the_workdir(tmp_path, mlp_config):
  path = tmp_path / "ledger.sqlite"
  a = healthy(mlp_config, tmp_path / "runs" / "mnist_mlp")       # named like its config
  b = overfitting(mlp_config, tmp_path / "runs" / "dropout0", started_offset=100,
                  model__dropout=0.0, num_epochs=6.0)
  out = cli(path, "import", str(a), str(b), "--note", "old runs")
  assert "as #1 (mnist_mlp, finished" in out and "as #2 (mnist_mlp" in out
  assert cli(path, "import", str(a)).count("as #1") == 1            # same attempt: same row
  with Ledger(str(path)) as ledger:
    run = ledger.get(2)
    assert run.config_file == MLP and run.note == "old runs"      # the note is kept
    assert run.config_diff == {"model.dropout": [0.2, 0.0], "num_epochs": [10.0, 6.0]}
    assert (run.code_commit, run.code_dirty) == ("abc1234", True)
    assert run.machine["device_count"] == 1 and run.steps_per_epoch == STEPS_PER_EPOCH
    assert len(ledger.runs()) == 2
  shutil.rmtree(tmp_path / "runs")
  listing = cli(path, "list")
  assert "mnist_mlp: 2 attempts" in listing
  lines = listing.splitlines()
  assert lines.index(next(l for l in lines if l.startswith("#1"))) < lines.index(
      next(l for l in lines if l.startswith("#2")))             # 96.5% before 96.1%
  assert "dropout=0" in listing and "old runs" in listing
  assert "over-fitting" in cli(path, "feedback", "2")
  assert "model.dropout" in cli(path, "--out", str(tmp_path / "png"), "compare", "1", "#2")
  with Ledger(str(path)) as ledger:
    assert ledger.integrity() == "ok" and len(ledger.get(2).records) == 13


def test_a_workdir_without_a_run_is_skipped_and_unknown_ids_are_one_sentence(tmp_path):
  (tmp_path / "empty").mkdir()
  out = cli(tmp_path / "l.sqlite", "import", str(tmp_path / "empty"))
  assert out.startswith("skipped") and "holds no practice_jax run" in out
  with pytest.raises(practice.PracticeError, match="No run #7 in"):
    cli(tmp_path / "l.sqlite", "feedback", "7")
  assert practice.main([f"--ledger={tmp_path / 'none.sqlite'}", "list"]) == 2


def test_a_run_without_run_json_is_unfinished_unless_a_value_is_not_finite(tmp_path,
                                                                           mlp_config):
  running = make_run(tmp_path / "running", mlp_config, [0.5], [2.3, 0.4], [0.1, 0.9],
                     diverged=True)              # config.json and metrics.jsonl only
  assert ledger_lib.read_workdir(str(running), MLP).status == "unfinished"
  broken = diverging(mlp_config, tmp_path / "broken")
  assert ledger_lib.read_workdir(str(broken), MLP).status == "diverged"
  # The loop's guard stops a run before a NaN is recorded: only training knows it
  # diverged, and a later import of the same workdir does not forget it.
  path = tmp_path / "ledger.sqlite"
  ledger_lib.record_workdir(str(running), MLP, "", str(path), "diverged")
  assert "as #1 (mnist_mlp, diverged" in cli(path, "import", str(running))
  assert "after its last record at step 100" in cli(path, "feedback", "1")


# ----------------------------------------------------------------------------- targets

def test_targets_parse_check_and_measure(tmp_path, mlp_config):
  targets = ledger_lib.parse_targets("accuracy>=95%, validation/loss<0.2")
  assert [str(t) for t in targets] == ["validation/accuracy>=0.95", "validation/loss<0.2"]
  with pytest.raises(ValueError, match="not of the form"):
    ledger_lib.parse_targets("accuracy is high")
  config = load_config("mnist_mlp")
  assert ledger_lib.check_target(config) is None
  config.target = "validation/f1>=0.9"
  assert "names the metric 'f1', which the classification task does not report" in (
      ledger_lib.check_target(config))
  workdir = healthy(mlp_config, tmp_path / "runs" / "mnist_mlp",
                    target="validation/accuracy>=0.94")
  run = ledger_lib.read_workdir(str(workdir), MLP)
  assert run.target_met and run.target_step == 300 and run.target_time_s == 30.5
  unmet = healthy(mlp_config, tmp_path / "runs" / "x", target="validation/accuracy>=0.99",
                  started_offset=60)
  path = tmp_path / "ledger.sqlite"
  cli(path, "import", str(workdir), str(unmet), "--config", MLP)
  listing = cli(path, "list", "mnist_mlp")
  assert "pass 30 s" in listing and "FAIL" in listing


# ---------------------------------------------------------------------------- feedback

def test_feedback_finds_over_fitting(tmp_path, mlp_config):
  run = ledger_lib.read_workdir(str(overfitting(mlp_config, tmp_path / "o")), MLP)
  found = {f.kind: f for f in practice.diagnose(run, [])}
  assert "over-fitting" in found and "diverged" not in found
  assert "lowest (0.12) at epoch 2" in found["over-fitting"].evidence
  advice = found["over-fitting"].advice
  assert "early_stopping.patience" in advice and "model.dropout=0.2 -> 0.4" in advice
  assert "plateau" in found       # the accuracy stalls too: its advice points above
  assert found["plateau"].advice.startswith("see over-fitting")


def test_feedback_finds_divergence(tmp_path, mlp_config):
  path = tmp_path / "ledger.sqlite"
  out = cli(path, "import", str(diverging(mlp_config, tmp_path / "runs" / "mnist_mlp")))
  assert "diverged" in out
  text = cli(path, "feedback", "1")
  # (a diverged run leaves no run.json: its steps per epoch are unknown)
  assert "- diverged: training diverged at step 300 (loss nan)" in text
  assert "gap" not in text and "over-fitting" not in text
  assert "optimizer.learning_rate=0.3 -> 0.1" in text
  # A too-high learning rate that does not reach NaN: the loss never goes down.
  stuck = make_run(tmp_path / "stuck", mlp_config, [2.4, 2.5, 2.35], [2.3, 2.31, 2.3, 2.32],
                   [0.1, 0.11, 0.1, 0.09], optimizer__learning_rate=1.0)
  found = {f.kind: f for f in practice.diagnose(ledger_lib.read_workdir(str(stuck), MLP), [])}
  assert "did not go down" in found["unstable"].evidence
  assert "optimizer.learning_rate=1" in found["unstable"].advice
  assert "still-improving" not in found


def test_feedback_finds_a_plateau_and_no_gain_over_the_last_attempt(tmp_path, mlp_config):
  path = tmp_path / "ledger.sqlite"
  first = healthy(mlp_config, tmp_path / "runs" / "a")
  second = plateau(mlp_config, tmp_path / "runs" / "b", started_offset=100)
  cli(path, "import", str(first), str(second), "--config", MLP)
  text = cli(path, "feedback", str(second))               # by workdir
  assert "- plateau: validation/accuracy reached 95.10% at epoch 2" in text
  assert "schedule.name='constant' -> 'warmup_cosine'" in text
  assert "- no-gain: no gain over the previous attempt #1" in text
  assert "schedule.name warmup_cosine -> constant" in text
  assert "the personal best is #1 with 96.50%" in text
  assert "over-fitting" not in text and "diverged" not in text
  assert "reference: the config documents 98.55% test/accuracy after 10 epochs" in text
  healthy_text = cli(path, "feedback", "1")
  assert "still-improving" in healthy_text and "num_epochs=10 -> 20" in healthy_text


# ------------------------------------------------------------------ compare and history

def test_compare_and_history_write_their_pictures(tmp_path, mlp_config):
  import matplotlib.image
  path = tmp_path / "ledger.sqlite"
  runs = [healthy(mlp_config, tmp_path / "runs" / "lr1"),
          overfitting(mlp_config, tmp_path / "runs" / "lr3", started_offset=100,
                      optimizer__learning_rate=3e-3),
          diverging(mlp_config, tmp_path / "runs" / "lr30", started_offset=200)]
  cli(path, "import", *map(str, runs), "--experiment", "mlp")
  text = cli(path, "compare", "1", "2", "3")
  assert "optimizer.learning_rate  0.001  0.003  0.3" in text
  assert "validation/accuracy       96.50%  96.10% (-0.40 pt)" in text
  png = tmp_path / "practice" / "compare_1_2_3.png"
  assert f"Learning curves overlaid: {png}" in text
  assert matplotlib.image.imread(str(png)).shape[1] > 1000
  text = cli(path, "history", "mlp")
  rows = [line.split() for line in text.splitlines()[3:6]]
  assert [r[3] for r in rows] == ["96.50%", "96.50%", "96.50%"]      # the personal best
  assert rows[2][2] == "diverged"
  assert matplotlib.image.imread(str(tmp_path / "practice" / "history_mlp.png")).ndim == 3
  assert not math.isnan(sum(float(r[4]) for r in rows))


# ------------------------------------------------------------------------ the real hook

def _main(args, env):
  return subprocess.run([sys.executable, "-m", "practice_jax.main", "--compilation_cache=",
                         f"--config={MLP}"] + args, cwd=REPO, env={**os.environ, **env},
                        capture_output=True, text=True, timeout=300)


def test_a_bad_target_is_refused_in_one_sentence(tmp_path):
  result = _main([f"--workdir={tmp_path}/run", "--config.target=validation/f1>=0.5"], {})
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith(
      "error: config.target='validation/f1>=0.5' names the metric 'f1'")
  assert not os.path.exists(tmp_path / "run")


@pytest.mark.real_data
def test_main_records_the_run(tmp_path, real_mnist_data_dir):
  result = _main([f"--workdir={tmp_path}/runs/mlp", "--config.num_epochs=0.05",
                  "--config.schedule.warmup_epochs=0", "--config.plots=False",
                  "--config.eval_every_steps=10", "--config.target=validation/accuracy>=0.5",
                  "--note=tiny try"], {"TFDS_DATA_DIR": real_mnist_data_dir})
  assert result.returncode == 0, result.stderr[-2000:]
  ledger_path = tmp_path / "runs" / "ledger.sqlite"
  assert f"Recorded as run #1 of mnist_mlp in {ledger_path}; target" in result.stdout
  with Ledger(str(ledger_path)) as ledger:
    run = ledger.get(1)
  assert run.note == "tiny try" and run.source == "training" and run.status == "finished"
  assert run.config_diff["num_epochs"] == [10.0, 0.05] and run.target_met is not None
  assert run.machine["device_kind"] and run.machine["cpu"]
  assert [r["step"] for r in run.records if r["split"] == "validation"][:3] == [0, 10, 20]


def test_a_ledger_that_cannot_be_written_is_one_warning(tmp_path, mlp_config, capsys):
  workdir = healthy(mlp_config, tmp_path / "runs" / "mnist_mlp")
  assert ledger_lib.record_workdir(str(workdir), MLP, "n", str(tmp_path)) is None  # a folder
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("warning: the run was not recorded")
  assert ledger_lib.record_workdir(str(workdir), MLP, "n", "") is None       # turned off
  assert not (tmp_path / "runs" / "ledger.sqlite").exists()
  assert ledger_lib.record_workdir(str(workdir), MLP, "n") == 1               # the default
  assert (tmp_path / "runs" / "ledger.sqlite").exists()
