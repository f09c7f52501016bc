"""The vision catalogue: every config runs, augmentation, reports, early stopping, CLIs."""

import json
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import REPO, load_config, tiny
from practice_jax import train
from practice_jax.data import augment, catalogue
from practice_jax.reporting import classification as report_lib
from practice_jax.reporting.progress import format_metrics
from practice_jax.tasks.base import pad_for_eval
from practice_jax.tasks.classification import ClassificationTask

CONFIGS = sorted(p.stem for p in (REPO / "configs").glob("*.py"))
# The configs of the classic tasks on TFDS datasets; the others (your own folders and
# tables, generative models, attacks, RL) run in their own tests on data made there, and
# the fine-tuning configs (which start from a run trained first) in tests/test_transfer.py.
def _on_tfds(name: str) -> bool:
  config = load_config(name)
  return (config.data.name in catalogue.CATALOGUE
          and not config.get("init_from", {}).get("workdir")
          and config.task.name in ("classification", "language_model")
          and not config.task.get("attacks", {}).get("methods")
          and not config.task.get("adversarial_training", {}).get("epsilon"))


ON_TFDS = [name for name in CONFIGS if _on_tfds(name)]


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_is_valid(name):
  from practice_jax.validation import validate
  config = load_config(name)
  if config.data.name in ("csv", "image_folder"):   # the user's files: tests/test_tables.py,
    return                                          # test_folders.py, test_sklearn_sets.py
  validate(config, 1)


@pytest.mark.parametrize("name", ON_TFDS)
def test_every_config_runs_two_steps_on_mock_data(name, mock_tfds, tmp_path):
  config = tiny(load_config(name))
  config.num_epochs = 2 / 6            # 48 mock training examples, batch 8: two steps
  if config.num_steps:                 # the language models and the speedrun count steps
    config.num_steps = config.eval_every_steps = 2
  if "sampling" in config.task:
    config.task.sampling.length = 10
  config.steps_per_dispatch = 1
  config.early_stopping.patience = min(config.early_stopping.patience, 1)
  record = train.train_and_evaluate(config, str(tmp_path))
  assert record["steps"] == 2
  assert np.isfinite(record["final"]["test"]["loss"])
  assert (tmp_path / "checkpoints" / "2").is_dir()
  report = "samples.txt" if config.task.name == "language_model" else "test_report.txt"
  assert (tmp_path / report).is_file()


def test_augmentation_is_deterministic_given_the_key_and_keeps_shapes():
  images = jax.random.randint(jax.random.key(0), (6, 8, 8, 3), 0, 256).astype(jnp.uint8)
  a = augment.augment(jax.random.key(1), images, crop_padding=2, horizontal_flip=True)
  b = augment.augment(jax.random.key(1), images, crop_padding=2, horizontal_flip=True)
  c = augment.augment(jax.random.key(2), images, crop_padding=2, horizontal_flip=True)
  chex.assert_trees_all_equal(a, b)
  chex.assert_equal_shape([a, images])
  assert a.dtype == jnp.uint8 and not jnp.array_equal(a, c)
  same = augment.augment(jax.random.key(1), images, crop_padding=0, horizontal_flip=False)
  chex.assert_trees_all_equal(same, images)


def test_flip_mirrors_and_crop_shifts_content():
  image = jnp.arange(16, dtype=jnp.uint8).reshape(1, 4, 4, 1)
  flipped = [augment.random_flip(jax.random.key(k), image) for k in range(16)]
  assert any(jnp.array_equal(f, image[:, :, ::-1]) for f in flipped)
  assert any(jnp.array_equal(f, image) for f in flipped)
  crops = [augment.random_crop(jax.random.key(k), image, 1) for k in range(32)]
  for crop in crops:   # every crop is a shifted window of the zero-padded image
    padded = np.pad(np.asarray(image[0, :, :, 0]), 1)
    assert any(np.array_equal(np.asarray(crop[0, :, :, 0]), padded[i:i + 4, j:j + 4])
               for i in range(3) for j in range(3))


def test_rotation_turns_about_the_centre_within_the_angle():
  line = np.zeros((1, 9, 9, 1), np.uint8)
  line[0, 4, :, 0] = 255                          # a horizontal line through the centre
  for k in range(8):
    out = np.asarray(augment.random_rotation(jax.random.key(k), jnp.asarray(line), 30.0))
    assert out.dtype == np.uint8 and out[0, 4, 4, 0] == 255   # the centre stays put
    ys, xs = np.nonzero(out[0, :, :, 0] > 127)
    slope = np.polyfit(xs - 4.0, ys - 4.0, 1)[0]
    assert abs(np.degrees(np.arctan(slope))) <= 30.5
  turned = [np.asarray(augment.random_rotation(jax.random.key(k), jnp.asarray(line), 90.0))
            for k in range(16)]
  assert any(t[0, 0, 4, 0] > 0 for t in turned)  # near-vertical lines occur
  images = jax.random.randint(jax.random.key(0), (4, 8, 8, 3), 0, 256).astype(jnp.uint8)
  chex.assert_trees_all_equal(augment.random_rotation(jax.random.key(1), images, 0.0), images)
  # Adding rotation leaves the crop and flip of the same key unchanged.
  a = augment.augment(jax.random.key(1), images, 2, True)
  b = augment.augment(jax.random.key(1), augment.random_rotation(
      jax.random.fold_in(jax.random.key(1), 2), images, 15.0), 2, True)
  chex.assert_trees_all_equal(
      b, augment.augment(jax.random.key(1), images, 2, True, rotation_degrees=15.0))
  assert not jnp.array_equal(a, b)


def test_augmentation_never_happens_at_evaluation(mock_tfds, tmp_path):
  config = tiny(load_config("fashion_mnist_cnn"))
  assert config.task.augment.crop_padding and config.task.augment.horizontal_flip
  exp = train.build(config)
  task = exp.task
  state = task.init_state(exp.plan)
  split = pad_for_eval(exp.source.eval_splits["test"], config.eval_batch_size)
  first = task.eval_step(state.replace(step=jnp.int32(1)), split)
  second = task.eval_step(state.replace(step=jnp.int32(2)), split)
  chex.assert_trees_all_equal(first, second)
  # ...and equals the model on the plain images (no fixed-key crop or flip either).
  logits = task.model.apply({"params": state.params, **state.model_state},
                            task.preprocess(jnp.asarray(split["image"])), train=False)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, split["label"])
  expected = float(jnp.sum(losses * split["mask"]))
  assert float(first["loss_sum"]) == pytest.approx(expected, rel=1e-5)


def test_classification_report_matches_hand_computed_values():
  labels = np.array([0, 0, 0, 1, 1, 2])
  preds = np.array([0, 0, 1, 1, 2, 2])
  cm = report_lib.confusion_matrix(labels, preds, 3)
  np.testing.assert_array_equal(cm, [[2, 1, 0], [0, 1, 1], [0, 0, 1]])
  report = report_lib.classification_report(cm, ["a", "b", "c"])
  a, b, c = (report["classes"][k] for k in "abc")
  assert (a["precision"], a["recall"], a["support"]) == (1.0, pytest.approx(2 / 3), 3)
  assert a["f1"] == pytest.approx(0.8)
  assert (b["precision"], b["recall"], b["f1"]) == (0.5, 0.5, 0.5)
  assert (c["precision"], c["recall"]) == (0.5, 1.0) and c["f1"] == pytest.approx(2 / 3)
  assert report["accuracy"] == pytest.approx(4 / 6)
  assert report["macro avg"]["f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
  assert report["weighted avg"]["recall"] == pytest.approx(4 / 6)
  text = report_lib.format_report(report)
  assert "precision" in text and "weighted avg" in text
  assert "rows: true class" in report_lib.format_confusion_matrix(cm, ["a", "b", "c"])


def test_a_class_never_predicted_has_zero_precision_not_nan():
  cm = report_lib.confusion_matrix(np.array([0, 1]), np.array([0, 0]), 2)
  report = report_lib.classification_report(cm, ["x", "y"])
  assert report["classes"]["y"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


@pytest.mark.parametrize("metric,values,stop_after", [
    ("loss", [1.0, 0.8, 0.9, 0.85, 0.81, 0.7], 5),      # 3 bad evaluations after 0.8
    ("accuracy", [0.5, 0.6, 0.6, 0.59, 0.61, 0.62, 0.3, 0.3, 0.3], 9),
])
def test_early_stopping_stops_at_the_right_epoch(metric, values, stop_after):
  stopper = train.EarlyStopping(
      metric=f"validation/{metric}", patience=3,
      higher_is_better=ClassificationTask.METRICS[metric].higher_is_better)
  stopped_at = None
  for epoch, value in enumerate(values, start=1):
    stopper.update(value, step=epoch)
    if stopper.stopped:
      stopped_at = epoch
      break
  assert stopped_at == stop_after


def test_early_stopping_run_reports_the_best_checkpoint(mock_tfds, tmp_path):
  config = tiny(load_config("mnist_keras_cnn"), epochs=30.0)
  config.early_stopping.patience = 1
  config.early_stopping.min_delta = 10.0     # nothing after the first epoch counts
  record = train.train_and_evaluate(config, str(tmp_path))
  assert record["early_stopped"] and record["steps"] == 2 * 6
  assert record["evaluated_checkpoint"] == {"which": "best", "step": 6}
  again = train.train_and_evaluate(config, str(tmp_path))   # a stopped run stays stopped
  assert again["steps"] == 12 and again["final"] == record["final"]


@pytest.mark.real_data
@pytest.mark.slow
def test_evaluate_and_predict_command_lines(tmp_path, real_mnist_data_dir):
  from PIL import Image
  config = load_config("mnist_keras_cnn")
  config.data.data_dir = real_mnist_data_dir
  config.num_epochs = 100 / 429
  config.early_stopping.patience = 0
  workdir = tmp_path / "run"
  record = train.train_and_evaluate(config, str(workdir))
  env = {"PATH": "/usr/bin:/bin"}

  def run(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)

  result = run("practice_jax.evaluate", f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "weighted avg" in result.stdout and "rows: true class" in result.stdout
  # The same checkpoint's test metrics as the run reported, in the console's format.
  assert f"test {format_metrics(record['final']['test'], ClassificationTask.METRICS)} (best" \
      in result.stdout
  report = json.loads((workdir / "test_report.json").read_text())
  assert sum(map(sum, report["confusion_matrix"])) == 10000

  import tensorflow_datasets as tfds
  sample = next(iter(tfds.as_numpy(tfds.load("mnist", split="test[:1]",
                                             data_dir=real_mnist_data_dir))))
  digit = tmp_path / "digit.png"
  Image.fromarray(sample["image"][:, :, 0]).save(digit)
  Image.new("L", (32, 20)).save(tmp_path / "big.png")
  (tmp_path / "junk.png").write_text("not an image")
  result = run("practice_jax.predict", f"--workdir={workdir}", str(digit))
  assert result.returncode == 0, result.stderr[-2000:]
  line = result.stdout.strip().splitlines()[-1]
  assert line.startswith(f"{digit}: {sample['label']} ")   # MNIST class names are digits
  result = run("practice_jax.predict", f"--workdir={workdir}", str(tmp_path / "big.png"))
  assert result.returncode == 2 and "is 32x20 pixels but the model takes 28x28" in result.stderr
  result = run("practice_jax.predict", f"--workdir={workdir}", str(tmp_path / "junk.png"))
  assert result.returncode == 2 and "is not a readable image" in result.stderr
