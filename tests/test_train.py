"""The training loop end to end on mock TFDS data: outputs, resume, determinism."""

import json
import shutil

import chex
import numpy as np
import pytest

from conftest import load_config, tiny
from practice_jax import optim, tasks, train
from practice_jax.checkpoint import Checkpointer
from practice_jax.errors import UserError
from practice_jax.reporting import writers


def _config(**overrides):
  config = tiny(load_config("mnist"), epochs=2.0)   # 48 train examples: 6 steps/epoch
  config.model.features = (4,)
  config.model.pools = ("avg",)
  config.model.dense = (16,)
  config.model.dense_dropout = 0.3
  config.checkpoint_every_steps = 2
  config.keep_checkpoints = 10
  for key, value in overrides.items():
    config[key] = value
  return config


def _final_params(config, workdir):
  task = tasks.build(config)
  tx = optim.build_optimizer(config.optimizer, optim.build_schedule(
      config.schedule, config.optimizer.learning_rate, 1, 1))
  state, _ = Checkpointer(str(workdir / "checkpoints"), 10).restore(task.init_state(tx))
  return state


def test_a_run_writes_its_results_and_resumes_exactly(mock_tfds, tmp_path):
  config = _config()
  full = train.train_and_evaluate(config, str(tmp_path / "full"))
  out = tmp_path / "full"
  for name in ("run.json", "metrics.jsonl", "learning_curves.png"):
    assert (out / name).is_file(), name
  assert list((out / "tensorboard").iterdir())
  record = json.loads((out / "run.json").read_text())
  assert record["steps"] == 12 and record["seed"] == 0
  assert record["config"]["model"]["name"] == "cnn"
  assert 0.0 <= record["final"]["test"]["accuracy"] <= 1.0
  splits = {r["split"] for r in writers.read_metrics(str(out))}
  assert splits == {"train", "validation", "test"}

  # Interrupted after step 4: drop the later checkpoints, as if the process had died.
  shutil.copytree(out, tmp_path / "resumed")
  resumed_dir = tmp_path / "resumed"
  for ckpt in (resumed_dir / "checkpoints").iterdir():
    if ckpt.name.isdigit() and int(ckpt.name) > 4:
      shutil.rmtree(ckpt)
  resumed = train.train_and_evaluate(config, str(resumed_dir))
  assert resumed["final"] == full["final"]
  chex.assert_trees_all_equal(_final_params(config, out).params,
                              _final_params(config, resumed_dir).params)
  steps = [r["step"] for r in writers.read_metrics(str(resumed_dir)) if r["split"] == "train"]
  assert steps == sorted(set(steps))   # no duplicated records from the re-done steps


def test_rerunning_a_finished_run_does_not_train_again(mock_tfds, tmp_path):
  config = _config(num_epochs=1.0)
  first = train.train_and_evaluate(config, str(tmp_path))
  again = train.train_and_evaluate(config, str(tmp_path))
  assert again["steps"] == first["steps"] and again["final"] == first["final"]


def test_two_runs_with_the_same_seed_agree(mock_tfds, tmp_path):
  config = _config(num_epochs=1.0)
  a = train.train_and_evaluate(config, str(tmp_path / "a"))
  b = train.train_and_evaluate(config, str(tmp_path / "b"))
  assert a["final"] == b["final"]
  config.seed = 1
  c = train.train_and_evaluate(config, str(tmp_path / "c"))
  assert c["final"] != a["final"]


def test_diverging_loss_stops_the_run_and_keeps_the_last_checkpoint(mock_tfds, tmp_path):
  config = _config(num_epochs=1.0)
  config.schedule.name = "constant"
  train.train_and_evaluate(config, str(tmp_path))            # a good first epoch: step 6
  config.num_epochs = 2.0
  config.optimizer.learning_rate = 1e30     # same optimizer: the checkpoint still fits
  with pytest.raises(train.TrainingDiverged,
                     match="between steps 6 and 8.*last good checkpoint is step 6"):
    train.train_and_evaluate(config, str(tmp_path), on_config_change="continue")
  assert (tmp_path / "checkpoints" / "6").is_dir()
  fresh = tmp_path / "fresh"
  with pytest.raises(train.TrainingDiverged, match="no checkpoint was saved before"):
    train.train_and_evaluate(config, str(fresh))


def test_unwritable_workdir_is_refused(mock_tfds, tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("keep me")
  with pytest.raises(UserError, match="Cannot write to the workdir"):
    train.train_and_evaluate(_config(), str(blocker / "run"))
  assert blocker.read_text() == "keep me"


def test_training_learns_on_a_separable_mock_problem(mock_tfds, tmp_path):
  """Accuracy on training data rises well above chance: the loop really optimises."""
  config = _config(num_epochs=30.0)
  config.optimizer.learning_rate = 3e-3
  config.model.dense_dropout = 0.0
  record = train.train_and_evaluate(config, str(tmp_path))
  train_records = [r for r in writers.read_metrics(str(tmp_path)) if r["split"] == "train"]
  assert train_records[-1]["loss"] < 0.5 * train_records[0]["loss"]
  assert np.isfinite(record["final"]["test"]["loss"])
