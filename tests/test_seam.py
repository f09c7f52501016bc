"""The seam: experiments of other shapes run through the unchanged loop, checkpoint and
resume bitwise (tests/seam_tasks.py defines them: a GAN with two models and two
optimizers, a task with no dataset, a student with a frozen teacher on streamed data)."""

import chex
import jax
import numpy as np
import pytest

import seam_tasks  # noqa: F401 - registers the tasks and sources
from conftest import checkpointed_state, killed_copy, load_config, tiny
from practice_jax import train
from practice_jax.config_base import base_config
from practice_jax.data.streaming import StreamingSource
from practice_jax.reporting import writers


def _config(task, data, steps=12):
  config = base_config(task, data)
  config.batch_size = 16
  config.num_steps = steps
  config.eval_every_steps = 4
  config.checkpoint_every_steps = 2
  config.keep_checkpoints = 100
  config.steps_per_dispatch = 2
  config.log_every_steps = 2
  config.schedule.name = "constant"
  config.optimizer.learning_rate = 1e-2
  config.plots = False
  return config


def _run_interrupted_and_resumed(config, tmp_path, cut):
  """A full run, and the same run cut after step `cut` (later checkpoints dropped, as
  if the process had died) and resumed: both must end bitwise equal."""
  full = train.train_and_evaluate(config, str(tmp_path / "full"))
  killed_copy(tmp_path / "full", tmp_path / "resumed", after_step=cut)
  resumed = train.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert resumed["final"] == full["final"]
  chex.assert_trees_all_equal(checkpointed_state(config, tmp_path / "full"),
                              checkpointed_state(config, tmp_path / "resumed"))
  strip = lambda records: [{k: v for k, v in r.items() if k != "time"} for r in records]
  assert strip(writers.read_metrics(str(tmp_path / "resumed"))) == strip(
      writers.read_metrics(str(tmp_path / "full")))
  return full


def test_a_gan_with_two_models_and_two_optimizers(tmp_path):
  config = _config("tiny_gan", "points", steps=40)
  config.optimizer.learning_rate = 3e-2
  record = _run_interrupted_and_resumed(config, tmp_path, cut=6)
  records = writers.read_metrics(str(tmp_path / "full"))
  gaps = [r["mean_gap"] for r in records if r["split"] == "validation"]
  assert records[0]["step"] == 0 and len(gaps) == 11      # step 0, then every 4 steps
  assert gaps[-1] < 0.7 * gaps[0]          # the generator moved towards the data
  assert {"g_learning_rate", "d_learning_rate", "d_loss", "g_loss"} <= set(
      next(r for r in records if r["split"] == "train"))
  assert record["monitored_metric"] == "validation/mean_gap"
  assert record["metrics"]["mean_gap"]["higher_is_better"] is False


def test_a_task_with_no_dataset_makes_its_data_inside_the_step(tmp_path):
  config = _config("generated_regression", "none", steps=60)
  config.eval_every_steps = 20
  record = _run_interrupted_and_resumed(config, tmp_path, cut=10)
  validation = [r["mse"] for r in writers.read_metrics(str(tmp_path / "full"))
                if r["split"] == "validation"]
  assert validation[-1] < 0.2 * validation[0]
  assert record["epochs"] is None and record["steps"] == 60


def test_a_frozen_teacher_in_the_state_on_streamed_data(tmp_path):
  config = _config("distillation", "stream_points", steps=24)   # 16 steps per epoch
  _run_interrupted_and_resumed(config, tmp_path, cut=10)        # resumes mid-epoch
  exp = train.build(config)
  initial = exp.task.init_state(exp.plan)
  final = checkpointed_state(config, tmp_path / "full")
  chex.assert_trees_all_equal(final.teacher, initial.teacher)    # frozen
  assert not np.allclose(jax.tree.leaves(final.params)[0], jax.tree.leaves(initial.params)[0])
  gaps = [r["gap"] for r in writers.read_metrics(str(tmp_path / "full"))
          if r["split"] == "validation"]
  assert gaps[-1] < gaps[0]


def _examples(n):
  return [{"x": np.float32([i]), "y": np.int32(i)} for i in range(n)]


def test_streamed_batches_are_a_function_of_the_step_and_resume_mid_epoch():
  source = StreamingSource(_examples(40), {}, {}, seed=3, threads=2, prefetch=3)
  assert source.steps_per_epoch(8) == 5
  whole = source.batches(0, 12, 8)                       # 2.4 epochs in one go
  chex.assert_shape(whole["x"], (12, 8, 1))
  for epoch in range(2):                                 # every epoch: each example once
    seen = np.sort(whole["y"][epoch * 5:(epoch + 1) * 5].ravel())
    np.testing.assert_array_equal(seen, np.arange(40))
  assert not np.array_equal(whole["y"][:5], whole["y"][5:10])   # reshuffled per epoch
  again = StreamingSource(_examples(40), {}, {}, seed=3, threads=1, prefetch=1)
  resumed = again.batches(7, 5, 8)                       # a new process, mid-epoch
  np.testing.assert_array_equal(resumed["y"], whole["y"][7:12])
  other = StreamingSource(_examples(40), {}, {}, seed=4).batches(0, 1, 8)
  assert not np.array_equal(other["y"][0], whole["y"][0])


def test_each_process_streams_its_own_share():
  shares = [StreamingSource(_examples(40), {}, {}, seed=0, process_index=i, process_count=2)
            for i in range(2)]
  a, b = (s.batches(0, 2, 10) for s in shares)
  assert set(a["y"].ravel()).isdisjoint(b["y"].ravel())
  assert len(set(a["y"].ravel()) | set(b["y"].ravel())) == 40


def test_a_tfds_dataset_streams_from_disk_with_exact_resume(mock_tfds, tmp_path):
  config = tiny(load_config("mnist"), epochs=1.0)
  config.data.in_memory = False
  config.model.features, config.model.pools, config.model.dense = (4,), ("avg",), (8,)
  config.checkpoint_every_steps = 2
  config.keep_checkpoints = 10
  full = train.train_and_evaluate(config, str(tmp_path / "full"))
  assert full["steps"] == 6 and np.isfinite(full["final"]["test"]["loss"])
  killed_copy(tmp_path / "full", tmp_path / "resumed", after_step=2)
  resumed = train.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert resumed["final"] == full["final"]


@pytest.mark.parametrize("task,data", [("tiny_gan", "none"), ("classification", "points")])
def test_a_task_refuses_data_of_another_kind(task, data):
  from practice_jax.errors import UserError
  from practice_jax.validation import validate
  config = _config(task, "points" if task == "tiny_gan" else "mnist")
  config.data = base_config(data=data).data
  with pytest.raises(UserError, match="Unknown dataset .* for this task"):
    validate(config, 1)
