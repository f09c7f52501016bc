"""Never lose a run: SIGKILL and resume, SIGTERM, corrupt checkpoints, workdir safety."""

import os
import signal
import subprocess
import sys
import time

import chex
import orbax.checkpoint as ocp
import pytest

from conftest import REPO, load_config, tiny
from practice_jax import train
from practice_jax.errors import UserError

# A small real-MNIST run: MLP, 240 steps, a checkpoint at every 10-step chunk, so a kill
# lands during a save as often as not.
RUN_FLAGS = ["--config=configs/mnist_mlp.py", "--config.model.hidden=(64,)",
             "--config.num_epochs=0.56", "--config.schedule.warmup_epochs=0.1",
             "--config.checkpoint_every_steps=10", "--config.keep_checkpoints=2",
             "--config.plots=False"]


def _start(workdir, data_dir, *extra):
  env = {**os.environ, "TFDS_DATA_DIR": data_dir}
  return subprocess.Popen(
      [sys.executable, "-m", "practice_jax.main", f"--workdir={workdir}", *RUN_FLAGS, *extra],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _final_state(workdir):
  with ocp.CheckpointManager(os.path.join(workdir, "checkpoints"),
                             item_names=("state", "meta")) as manager:
    step = manager.latest_step()
    return manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))["state"]


def _wait_for_training(proc, timeout=120):
  """Reads stdout until the first progress line: the process is inside the loop."""
  deadline = time.monotonic() + timeout
  for line in proc.stdout:
    if "steps/s" in line or "step " in line:
      return
    assert time.monotonic() < deadline, "training did not start"
  raise AssertionError("process ended before training: " + proc.stderr.read()[-2000:])


@pytest.mark.real_data
@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(tmp_path,
                                                                          real_mnist_data_dir):
  """Seeded fault injection: four SIGKILLs at random moments of the process's life (start-up,
  data loading, compiling, training, evaluations every 40 steps, checkpoint saves, the final
  evaluation), each followed by a re-run; the end equals an uninterrupted run's. Another
  seed: PRACTICE_JAX_FAULT_SEED=N."""
  import random
  rng = random.Random(int(os.environ.get("PRACTICE_JAX_FAULT_SEED", "0")))
  extra = ("--config.eval_every_steps=40",)
  reference = tmp_path / "reference"
  start = time.monotonic()
  proc = _start(reference, real_mnist_data_dir, *extra)
  assert proc.wait(timeout=600) == 0, proc.stderr.read()[-2000:]
  lifetime = time.monotonic() - start
  proc.stdout.close()
  proc.stderr.close()

  killed = tmp_path / "killed"
  for _ in range(4):
    proc = _start(killed, real_mnist_data_dir, *extra)
    time.sleep(rng.uniform(0.3, 1.0) * lifetime)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stdout.close()
    proc.stderr.close()
  proc = _start(killed, real_mnist_data_dir, *extra)
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-2000:]

  a, b = _final_state(reference), _final_state(killed)
  assert int(a["step"]) == int(b["step"]) == 240
  chex.assert_trees_all_equal(a["params"], b["params"])
  chex.assert_trees_all_equal(a["opt_state"], b["opt_state"])
  import json
  ref_record = json.loads((reference / "run.json").read_text())
  killed_record = json.loads((killed / "run.json").read_text())
  assert ref_record["final"] == killed_record["final"]
  # Records up to each checkpoint were on disk with it: the killed run's history is the
  # uninterrupted one's, line for line (times aside).
  from practice_jax.reporting import writers
  strip = lambda workdir: [{k: v for k, v in r.items() if k != "time"}
                           for r in writers.read_metrics(str(workdir))]
  assert strip(killed) == strip(reference)


@pytest.mark.real_data
@pytest.mark.slow
def test_sigterm_saves_the_current_step_and_the_rerun_continues(tmp_path, real_mnist_data_dir):
  workdir = tmp_path / "run"
  proc = _start(workdir, real_mnist_data_dir, "--config.checkpoint_every_steps=1000")
  _wait_for_training(proc)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
  message = [l for l in err.splitlines() if l.startswith("Stopped by SIGTERM")]
  assert message, err[-2000:]
  step = int(message[0].split("at step ")[1].split()[0])
  assert 0 < step < 240 and (workdir / "checkpoints" / str(step)).is_dir()
  assert "Re-run the same command to continue" in message[0]
  proc = _start(workdir, real_mnist_data_dir, "--config.checkpoint_every_steps=1000")
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-2000:]
  assert f"Resuming from the checkpoint at step {step}" in out


def _config():
  config = tiny(load_config("mnist_mlp"), epochs=2.0)
  config.model.hidden = (16,)
  config.checkpoint_every_steps = 2
  config.keep_checkpoints = 3
  return config


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous(mock_tfds, tmp_path, capsys):
  config = _config()
  first = train.train_and_evaluate(config, str(tmp_path))
  latest = tmp_path / "checkpoints" / "12"
  for root, _, files in os.walk(latest / "state"):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"\0garbage\0")
  again = train.train_and_evaluate(config, str(tmp_path))
  err = capsys.readouterr().err
  assert "warning: checkpoint 12" in err and "used step 10 instead" in err
  assert again["final"] == first["final"]     # steps 11-12 re-done, to the same result
  assert (tmp_path / "checkpoints_corrupt").is_dir()   # kept, not deleted


def test_a_half_written_checkpoint_is_never_taken_as_the_latest(mock_tfds, tmp_path):
  config = _config()
  first = train.train_and_evaluate(config, str(tmp_path))
  # What orbax leaves behind when killed mid-save: a temporary directory, never renamed.
  partial = tmp_path / "checkpoints" / "14.orbax-checkpoint-tmp-1234567"
  (partial / "state").mkdir(parents=True)
  (partial / "state" / "junk").write_bytes(b"\0")
  again = train.train_and_evaluate(config, str(tmp_path))
  assert again["steps"] == 12 and again["final"] == first["final"]


def test_a_workdir_with_another_config_is_refused_unless_told(mock_tfds, tmp_path):
  config = _config()
  train.train_and_evaluate(config, str(tmp_path))
  changed = _config()
  changed.optimizer.learning_rate = 0.5
  with pytest.raises(UserError, match=r"optimizer.learning_rate: 0.001 -> 0.5"):
    train.train_and_evaluate(changed, str(tmp_path))
  assert (tmp_path / "checkpoints" / "12").is_dir()         # nothing deleted
  changed.num_epochs = 3.0
  continued = train.train_and_evaluate(changed, str(tmp_path), on_config_change="continue")
  assert continued["steps"] == 18
  restarted = train.train_and_evaluate(changed, str(tmp_path), on_config_change="restart")
  assert restarted["steps"] == 18
  from practice_jax.reporting import writers
  records = writers.read_metrics(str(tmp_path))
  # The old history was deleted: one fresh run, its evaluation before training first.
  assert (records[0]["step"], records[0]["split"]) == (0, "validation")
  assert [r["step"] for r in records].count(0) == 1


def test_continuing_with_an_incompatible_state_is_refused_and_moves_nothing(mock_tfds, tmp_path):
  config = _config()
  train.train_and_evaluate(config, str(tmp_path))
  changed = _config()
  changed.optimizer.name = "sgd"            # another optimizer state: checkpoints cannot fit
  before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
  with pytest.raises(UserError, match="restores into this config's train state"):
    train.train_and_evaluate(changed, str(tmp_path), on_config_change="continue")
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before
  assert not (tmp_path / "checkpoints_corrupt").exists()


def _lock(workdir, host, pid, age_s=0.0):
  import json
  import socket
  workdir.mkdir(parents=True, exist_ok=True)
  path = workdir / ".lock"
  path.write_text(json.dumps({"host": host or socket.gethostname(), "pid": pid,
                              "since": "2026-12-01 10:00:00 UTC"}))
  os.utime(path, (time.time() - age_s, time.time() - age_s))
  return path


def test_a_workdir_in_use_is_refused_naming_the_holder(mock_tfds, tmp_path):
  config = tiny(load_config("mnist_mlp"))
  config.model.hidden = (16,)
  sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    lock = _lock(tmp_path / "run", None, sleeper.pid)          # a live run on this host
    with pytest.raises(UserError, match=rf"in use by another run \(pid {sleeper.pid} on "):
      train.train_and_evaluate(config, str(tmp_path / "run"))
    assert lock.exists() and sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lock"]
    _lock(tmp_path / "other", "another-host", 1, age_s=10)    # a fresh lock of another host
    with pytest.raises(UserError, match="pid 1 on another-host"):
      train.train_and_evaluate(config, str(tmp_path / "other"))
  finally:
    sleeper.kill()
    sleeper.wait()


def test_the_lock_of_a_killed_run_is_taken_over(mock_tfds, tmp_path, capsys):
  config = tiny(load_config("mnist_mlp"))
  config.model.hidden = (16,)
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  _lock(tmp_path / "here", None, dead.pid)                      # its pid is gone
  record = train.train_and_evaluate(config, str(tmp_path / "here"))
  assert record["steps"] == 3 and not (tmp_path / "here" / ".lock").exists()
  assert "took over the lock of a run that is gone" in capsys.readouterr().err
  _lock(tmp_path / "away", "another-host", 1, age_s=3600)       # silent for an hour
  assert train.train_and_evaluate(config, str(tmp_path / "away"))["steps"] == 3


@pytest.mark.real_data
@pytest.mark.slow
def test_two_runs_started_together_one_trains_the_other_is_refused(tmp_path, real_mnist_data_dir):
  workdir = tmp_path / "run"
  procs = [_start(workdir, real_mnist_data_dir) for _ in range(2)]   # 240 steps each
  results = [p.communicate(timeout=600) + (p.returncode,) for p in procs]
  codes = sorted(r[2] for r in results)
  assert codes == [0, 2], [r[1][-1500:] for r in results]
  refused = next(r for r in results if r[2] == 2)
  assert "is in use by another run" in refused[1] and "Traceback" not in refused[1]
  import json
  assert json.loads((workdir / "run.json").read_text())["steps"] == 240
  from practice_jax.reporting import writers
  steps = [(r["step"], r["split"]) for r in writers.read_metrics(str(workdir))]
  assert len(steps) == len(set(steps))                         # no record written twice


@pytest.fixture
def small_disk(tmp_path):
  """A 1.5 MB file system (tmpfs; needs root), grown later with .grow()."""
  mount = tmp_path / "disk"
  mount.mkdir()
  if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1500k", "tmpfs", str(mount)],
                    capture_output=True).returncode != 0:
    pytest.skip("cannot mount a small tmpfs here (needs root)")

  class Disk:
    path = mount

    def grow(self):
      subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)
  try:
    yield Disk()
  finally:
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_is_one_sentence_and_the_rerun_after_freeing_space_resumes(tmp_path,
                                                                            small_disk):
  config = tmp_path / "tiny_mlp.py"
  config.write_text(
      "import sys\n"
      f"sys.path.insert(0, {str(REPO / 'tests')!r})\n"
      "from conftest import load_config, tiny\n\n\n"
      "def get_config():\n"
      "  config = tiny(load_config('mnist_mlp'), epochs=5.0)\n"
      "  config.model.hidden = (64,)\n"
      "  config.checkpoint_every_steps = 2\n"
      "  config.keep_checkpoints = 5\n"
      "  config.plots = False\n"
      "  return config\n")
  workdir = small_disk.path / "run"
  env = {**os.environ, "TFDS_DATA_DIR": str(tmp_path / "tfds"), "PYTHONPATH": str(REPO)}
  command = [sys.executable, str(REPO / "tests" / "helpers" / "with_mock_tfds.py"),
             "practice_jax.main", f"--config={config}", f"--workdir={workdir}",
             "--compilation_cache="]
  full = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=300)
  assert full.returncode == 2, full.stderr[-3000:]
  assert "Traceback" not in full.stderr and len(full.stderr.splitlines()) <= 2, full.stderr
  message = full.stderr.strip().splitlines()[-1]
  assert message.startswith(f"error: The disk holding {workdir}/checkpoints is full")
  assert "MB free, one checkpoint takes about" in message and "is intact" in message
  saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert saved and max(saved) < 30
  small_disk.grow()                                    # space freed: the same command
  again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
  assert again.returncode == 0, again.stderr[-3000:]
  assert f"Resuming from the checkpoint at step {max(saved)}" in again.stdout
  import json
  assert json.loads((workdir / "run.json").read_text())["steps"] == 30


@pytest.mark.real_data
def test_ctrl_c_while_starting_up_stops_in_one_sentence_and_writes_nothing(tmp_path,
                                                                         real_mnist_data_dir):
  workdir = tmp_path / "run"
  proc = _start(workdir, real_mnist_data_dir)
  time.sleep(0.5)                       # importing JAX, before any data or compiling
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 130, err[-2000:]
  assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
  assert "Stopped by SIGINT while starting up: nothing was trained or written" in err
  assert not workdir.exists()


def test_a_run_made_before_a_key_existed_resumes_but_a_changed_key_is_refused(tmp_path):
  """New config keys default to the behaviour from before they existed, so a workdir
  whose config.json lacks them is the same run; setting one otherwise is a change."""
  import json

  from practice_jax import workdir as workdir_lib
  config = load_config("mnist")
  stored = json.loads(config.to_json_best_effort())
  del stored["task"]["augment"]["rotation_degrees"]       # written before rotation existed
  (tmp_path / "checkpoints").mkdir()
  (tmp_path / "config.json").write_text(json.dumps(stored))
  assert workdir_lib.check(str(tmp_path), config, "refuse") == []
  config.task.augment.rotation_degrees = 10.0
  with pytest.raises(UserError, match=r"task.augment.rotation_degrees: 0.0 -> 10.0"):
    workdir_lib.check(str(tmp_path), config, "refuse")
