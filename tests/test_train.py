"""The training loop end to end on mock TFDS data: outputs, resume, determinism."""

import json

import chex
import pytest

from conftest import checkpointed_state, killed_copy, load_config, tiny
from practice_jax import train
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


def _records(workdir):
  return [{k: v for k, v in r.items() if k != "time"} for r in writers.read_metrics(str(workdir))]


def test_a_run_writes_its_results_and_resumes_exactly(mock_tfds, tmp_path, capsys):
  config = _config()
  config.log_every_steps = 4        # the resumed run must restore a half-full log window
  full = train.train_and_evaluate(config, str(tmp_path / "full"))
  full_lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("epoch")]
  out = tmp_path / "full"
  for name in ("run.json", "metrics.jsonl", "learning_curves.png"):
    assert (out / name).is_file(), name
  assert list((out / "tensorboard").iterdir())
  record = json.loads((out / "run.json").read_text())
  assert record["steps"] == 12 and record["seed"] == 0
  assert record["config"]["model"]["name"] == "cnn"
  metrics = writers.read_metrics(str(out))
  test = [r for r in metrics if r["split"] == "test"]
  assert len(test) == 1 and test[0]["accuracy"] == record["final"]["test"]["accuracy"]
  # TensorBoard reads the same scalars back from its event file.
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
  events = EventAccumulator(str(out / "tensorboard"))
  events.Reload()
  assert "test/accuracy" in events.Tags()["scalars"]
  assert events.Scalars("test/accuracy")[-1].value == pytest.approx(test[0]["accuracy"])
  assert {r["split"] for r in metrics} == {"train", "validation", "test"}
  assert [r["step"] for r in metrics if r["split"] == "validation"] == [0, 6, 12]

  # Interrupted after step 2: drop the later checkpoints, as if the process had died.
  resumed_dir = killed_copy(out, tmp_path / "resumed", after_step=2)
  resumed = train.train_and_evaluate(config, str(resumed_dir))
  assert resumed["final"] == full["final"]
  chex.assert_trees_all_equal(checkpointed_state(config, out).params,
                              checkpointed_state(config, resumed_dir).params)
  # Every record (the logging window and epoch sums restored from the checkpoint
  # included) and every epoch line equal the uninterrupted run's.
  assert _records(resumed_dir) == _records(out)
  resumed_lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("epoch")]
  assert resumed_lines == [l for l in full_lines if float(l.split()[1]) > 2 / 6]


def test_rerunning_a_finished_run_does_not_train_again(mock_tfds, tmp_path, capsys):
  config = _config(num_epochs=1.0)
  first = train.train_and_evaluate(config, str(tmp_path))
  capsys.readouterr()
  files = {p: p.read_bytes() for p in tmp_path.rglob("*")
           if p.is_file() and p.name != "config.json"}
  again = train.train_and_evaluate(config, str(tmp_path))
  assert again == json.loads((tmp_path / "run.json").read_text())
  assert again["steps"] == first["steps"] and again["final"] == first["final"]
  out = capsys.readouterr().out
  assert "is finished (step 6 of 6)" in out and "Nothing was changed" in out
  assert "steps/s" not in out and "| train" not in out     # no step ran
  after = {p: p.read_bytes() for p in tmp_path.rglob("*")
           if p.is_file() and p.name != "config.json"}
  assert after == files      # no metric record, event file, report or checkpoint added


def test_a_run_killed_during_its_final_evaluation_redoes_it_once(mock_tfds, tmp_path):
  config = _config(num_epochs=1.0)
  first = train.train_and_evaluate(config, str(tmp_path))
  records = _records(tmp_path)
  (tmp_path / "run.json").unlink()          # died after the test records, before run.json
  again = train.train_and_evaluate(config, str(tmp_path))
  assert again["final"] == first["final"]
  assert _records(tmp_path) == records       # the test record once, not twice


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


def test_training_learns_the_training_set(mock_tfds, tmp_path):
  """Mock labels are random, so only memorising counts: training accuracy rises from
  chance to nearly all of the 48 examples; the loop really optimises."""
  config = _config(num_epochs=30.0)
  config.optimizer.learning_rate = 3e-3
  config.model.dense_dropout = 0.0
  config.model.features, config.model.dense = (8,), (64,)
  train.train_and_evaluate(config, str(tmp_path))
  train_records = [r for r in writers.read_metrics(str(tmp_path)) if r["split"] == "train"]
  assert train_records[-1]["loss"] < 0.5 * train_records[0]["loss"]
  assert train_records[0]["accuracy"] < 0.5 and train_records[-1]["accuracy"] > 0.9


def test_chunks_end_on_multiples_of_k_within_each_epoch_and_the_run():
  ends, step = [], 0
  while step < 25:
    step = train.chunk_end(step, 25, 4, 10)
    ends.append(step)
  assert ends == [4, 8, 10, 14, 18, 20, 24, 25]
  assert train.chunk_end(0, 7, 4, None) == 4 and train.chunk_end(4, 7, 4, None) == 7
  assert train.chunk_end(3, 100, 4, 10) == 4      # a resumed run realigns
  # Unrolled chunks cut short run one step at a time (no program of another length).
  ends, step = [], 0
  while step < 25:
    step = train.chunk_end(step, 25, 4, 10, unrolled=True)
    ends.append(step)
  assert ends == [4, 8, 9, 10, 14, 18, 19, 20, 24, 25]
  assert train.chunk_end(1, 100, 4, 10, unrolled=True) == 2
