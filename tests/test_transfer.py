"""Transfer learning: init_from (selected parameters, new head, shape refusals, exact
resume), freezing (parameters and batch-norm statistics unchanged), gradual unfreezing,
LoRA, and training on fewer labels."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import REPO, killed_copy, load_config, tiny
from practice_jax import lora, optim, train, transfer
from practice_jax.errors import UserError
from practice_jax.validation import validate


def _cnn(data="mnist", epochs=1.0):
  """A tiny batch-normalised CNN on mock data: 48 training examples, 6 steps an epoch."""
  config = tiny(load_config("fashion_mnist_cnn"), epochs=epochs)
  config.data.name = data
  config.model.features = (4, 8)
  config.model.dense = (16,)
  config.task.augment.horizontal_flip = False
  config.checkpoint_every_steps = 2
  config.keep_checkpoints = 10
  config.plots = False
  return config


@pytest.fixture(scope="module")
def mock_data(tmp_path_factory):
  """conftest's mock_tfds for the whole module (its runs are shared by the tests)."""
  import tensorflow_datasets as tfds

  from practice_jax.data import tfds_source
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(tfds_source, "_hosts_reachable", lambda urls: True)
    patch.setenv("TFDS_DATA_DIR", str(tmp_path_factory.mktemp("tfds")))
    with tfds.testing.mock_data(num_examples=64):
      yield


@pytest.fixture(scope="module")
def source(mock_data, tmp_path_factory):
  """A trained tiny run on mock MNIST (its workdir)."""
  workdir = str(tmp_path_factory.mktemp("runs") / "source")
  train.train_and_evaluate(_cnn(), workdir)
  return workdir


def _probe_config(source):
  config = _cnn("fashion_mnist")
  config.init_from.workdir = source
  config.optimizer.freeze = "^(?!Dense_1)"
  return config


@pytest.fixture(scope="module")
def probe(source, tmp_path_factory):
  """A linear probe on mock Fashion-MNIST started from `source`: (workdir, record)."""
  workdir = tmp_path_factory.mktemp("runs") / "probe"
  return workdir, train.train_and_evaluate(_probe_config(source), str(workdir))


def _state(workdir, which="last"):
  return train.load_trained(workdir, which)[1]


def test_a_linear_probe_takes_everything_and_keeps_frozen_weights_and_statistics(
    source, probe):
  """Fine-tuned from the source with all but the head frozen: every frozen parameter and
  batch-norm statistic ends bitwise equal to the source's; the head trained."""
  workdir, record = probe
  before, after = _state(source, "best"), _state(workdir)
  assert int(after.step) == 6
  for name in ("Conv_0", "Conv_1", "BatchNorm_0", "BatchNorm_1", "Dense_0"):
    chex.assert_trees_all_equal(after.params[name], before.params[name])
  chex.assert_trees_all_equal(after.model_state, before.model_state)
  assert not np.array_equal(after.params["Dense_1"]["kernel"],
                            before.params["Dense_1"]["kernel"])
  entry = record["init_from"]
  assert entry["workdir"].endswith("source") and entry["which"] == "best"
  assert entry["tensors_taken"] == len(jax.tree.leaves(before.params)) + 4
  assert entry["kept_fresh"] == [] and entry["reinitialised"] == []
  assert json.loads((workdir / "run.json").read_text())["init_from"] == entry


def test_only_the_included_and_renamed_parameters_load(source, tmp_path, capsys):
  config = _cnn()
  config.init_from.workdir = source
  config.init_from.which = "last"
  config.init_from.include = r"^Conv_0/"
  config.num_steps = 1
  exp = train.build(config)
  fresh = exp.task.init_state(exp.plan)
  src = _state(source)
  state = transfer.start(exp, str(tmp_path / "new"), exp.parallel.put_state(fresh))
  chex.assert_trees_all_equal(state.params["Conv_0"], src.params["Conv_0"])
  for name in ("Conv_1", "Dense_0", "Dense_1", "BatchNorm_0"):
    chex.assert_trees_all_equal(state.params[name], fresh.params[name])
  chex.assert_trees_all_equal(state.model_state, fresh.model_state)
  assert "1 tensors taken (36 of" in capsys.readouterr().out
  # A rename map: a source whose layers live under another name (an encoder's), the
  # convolutions taken by include and renamed onto this model's paths.
  section = ml_collections.ConfigDict({"workdir": source, "include": "^encoder_Conv",
                                       "rename": (("^encoder_", ""),)})
  renamed = {"encoder_" + k: v for k, v in src.params.items()}
  params, state, summary = transfer.transfer(section, fresh, renamed, {}, 10)
  for name in ("Conv_0", "Conv_1"):
    chex.assert_trees_all_equal(params[name], src.params[name])
  for name in ("Dense_0", "Dense_1", "BatchNorm_0"):
    chex.assert_trees_all_equal(params[name], fresh.params[name])
  assert summary["tensors_taken"] == 2 and "Dense_1/kernel" in summary["kept_fresh"]
  section.include = "nothing_matches"
  with pytest.raises(UserError, match="matches none of the source run's"):
    transfer.transfer(section, fresh, src.params, src.model_state, 10)


def test_a_new_head_is_reinitialised_and_other_mismatches_are_refused(source):
  config = _cnn()
  config.model.features = (4, 8)
  config.num_steps = 1
  exp = train.build(config)
  fresh = exp.task.init_state(exp.plan)
  src = _state(source)
  section = ml_collections.ConfigDict({"workdir": source, "include": "", "rename": ()})
  # The source had 3 classes: its head differs in the last dimension only.
  three = jax.tree.map(lambda x: x, src.params)
  three["Dense_1"] = {"kernel": src.params["Dense_1"]["kernel"][:, :3],
                      "bias": src.params["Dense_1"]["bias"][:3]}
  params, state, summary = transfer.transfer(section, fresh, three, src.model_state, 10)
  assert sorted(summary["reinitialised"]) == ["Dense_1/bias", "Dense_1/kernel"]
  chex.assert_trees_all_equal(params["Dense_1"], fresh.params["Dense_1"])
  chex.assert_trees_all_equal(params["Conv_1"], src.params["Conv_1"])
  chex.assert_trees_all_equal(state, src.model_state)
  # A conv layer of another width: refused in one sentence naming it and both shapes.
  wide = jax.tree.map(lambda x: x, src.params)
  wide["Conv_1"] = {"kernel": jnp.zeros((3, 3, 4, 5))}
  wide["BatchNorm_1"] = {"scale": jnp.zeros((5,)), "bias": jnp.zeros((5,))}
  with pytest.raises(UserError) as e:
    transfer.transfer(section, fresh, wide, src.model_state, 10)
  message = str(e.value)
  assert "Conv_1/kernel (source Conv_1/kernel (3, 3, 4, 5), here (3, 3, 4, 8))" in message
  assert "BatchNorm_1/scale (source BatchNorm_1/scale (5,), here (8,))" in message
  assert message.count(". ") == 0 and message.endswith(".")


def test_bad_sources_are_refused_before_training(mock_data, tmp_path):
  config = _cnn()
  config.init_from.workdir = str(tmp_path / "nothing")
  with pytest.raises(UserError, match="holds no practice_jax run"):
    train.train_and_evaluate(config, str(tmp_path / "new"))
  assert not (tmp_path / "new" / "checkpoints").exists()
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "config.json").write_text(_cnn().to_json())
  config.init_from.workdir = str(tmp_path / "empty")
  with pytest.raises(UserError, match="has no checkpoint to start from"):
    train.train_and_evaluate(config, str(tmp_path / "new"))
  gan = load_config("mnist_dcgan")
  gan.init_from.workdir = str(tmp_path / "empty")
  with pytest.raises(UserError, match="cannot start from another run"):
    validate(gan, 1)
  config.init_from.which = "first"
  with pytest.raises(UserError, match="must be 'best' or 'last'"):
    validate(config, 1)


def test_a_fine_tuned_run_resumes_exactly_after_being_killed(source, probe, tmp_path):
  """The fine-tuned run killed after its step-2 checkpoint and run again ends where the
  uninterrupted one does: the resumed run restores its own checkpoint, not the source."""
  reference, first = probe
  copy = killed_copy(reference, tmp_path / "killed", after_step=2)
  (copy / "run.json").unlink()
  second = train.train_and_evaluate(_probe_config(source), str(copy))
  a, b = _state(str(reference)), _state(str(copy))
  chex.assert_trees_all_equal(a.params, b.params)
  chex.assert_trees_all_equal(a.opt_state, b.opt_state)
  chex.assert_trees_all_equal(a.model_state, b.model_state)
  assert first["final"] == second["final"] and second["init_from"] == first["init_from"]


# The fine-tuned run of the SIGKILL test, as a config file for `python -m practice_jax.main`:
# _cnn() on mock Fashion-MNIST, 4 epochs = 24 steps, a checkpoint every 4 steps, started
# from `source` with its first convolution and that layer's batch norm frozen.
KILLED_CONFIG = """
import sys
sys.path.insert(0, {tests!r})
from conftest import load_config, tiny


def get_config():
  config = tiny(load_config("fashion_mnist_cnn"), epochs=4.0)
  config.model.features = (4, 8)
  config.model.dense = (16,)
  config.task.augment.horizontal_flip = False
  config.checkpoint_every_steps = 4
  config.keep_checkpoints = 3
  config.plots = False
  config.init_from.workdir = {source!r}
  config.optimizer.freeze = "^(Conv_0|BatchNorm_0)/"
  return config
"""


def _main(config_file, workdir, data_dir):
  """`python -m practice_jax.main` in a process of its own, on the mock datasets."""
  env = {**os.environ, "TFDS_DATA_DIR": str(data_dir), "PYTHONPATH": str(REPO)}
  return subprocess.Popen(
      [sys.executable, str(REPO / "tests" / "helpers" / "with_mock_tfds.py"),
       "practice_jax.main", f"--config={config_file}", f"--workdir={workdir}"],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _saved_steps(workdir):
  folder = workdir / "checkpoints"
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if (
      folder.is_dir()) else []


def test_a_fine_tuned_run_killed_by_sigkill_resumes_to_the_uninterrupted_result(
    source, tmp_path):
  """A real SIGKILL: the fine-tuned run (init_from, a frozen part) is killed in the middle
  of training, as soon as a checkpoint is on disk (often during the next save), and the
  same command run again restores its own checkpoint, not the source, and ends bitwise
  where an uninterrupted run of the same config ends: parameters, optimizer state,
  batch-norm statistics, final metrics and the metrics history."""
  config_file = tmp_path / "finetune.py"
  config_file.write_text(KILLED_CONFIG.format(tests=str(REPO / "tests"), source=source))
  reference, killed = tmp_path / "reference", tmp_path / "killed"
  # The uninterrupted run in this process (the same mock data, the same compiled step).
  spec = importlib.util.spec_from_file_location("finetune_config", config_file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  train.train_and_evaluate(module.get_config(), str(reference))

  proc = _main(config_file, killed, tmp_path / "tfds")
  deadline = time.monotonic() + 300
  while not _saved_steps(killed) and proc.poll() is None:
    assert time.monotonic() < deadline, "no checkpoint was written"
    time.sleep(0.005)
  proc.send_signal(signal.SIGKILL)
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == -signal.SIGKILL, err[-3000:]
  assert not (killed / "run.json").exists()            # it died before the end
  last = max(_saved_steps(killed))
  assert 0 < last < 24

  proc = _main(config_file, killed, tmp_path / "tfds")
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  resumed = int(out.split("Resuming from the checkpoint at step ")[1].split()[0])
  assert 0 < resumed < 24 and "Initialised from" not in out

  a, b = _state(str(reference)), _state(str(killed))
  assert int(a.step) == int(b.step) == 24
  chex.assert_trees_all_equal(a.params, b.params)
  chex.assert_trees_all_equal(a.opt_state, b.opt_state)
  chex.assert_trees_all_equal(a.model_state, b.model_state)
  # The frozen part is the source's, bitwise, its batch-norm statistics too; the rest trained.
  src = _state(source, "best")
  for name in ("Conv_0", "BatchNorm_0"):
    chex.assert_trees_all_equal(b.params[name], src.params[name])
  chex.assert_trees_all_equal(b.model_state["batch_stats"]["BatchNorm_0"],
                              src.model_state["batch_stats"]["BatchNorm_0"])
  assert not np.array_equal(b.params["Conv_1"]["kernel"], src.params["Conv_1"]["kernel"])
  first, second = (json.loads((w / "run.json").read_text()) for w in (reference, killed))
  assert first["final"] == second["final"]
  assert first["init_from"] == second["init_from"] and first["init_from"]["tensors_taken"]
  from practice_jax.reporting import writers
  strip = lambda workdir: [{k: v for k, v in r.items() if k != "time"}
                           for r in writers.read_metrics(str(workdir))]
  assert strip(killed) == strip(reference)


def _tx(**settings):
  opt = optim.optimizer_config()
  opt.update(settings)
  return optim.build(opt, optim.schedule_config(), optim.Plan(10, 2))[0]


def test_gradual_unfreezing_switches_at_the_epoch_boundary():
  """Dense_0 frozen, unfrozen from epoch 1.5 = step 3 (2 steps an epoch): no update at
  steps 0-2 (no weight decay either), a full one from step 3; Dense_1 always trains."""
  params = {"Dense_0": {"kernel": jnp.ones((3, 2))}, "Dense_1": {"kernel": jnp.ones((2, 2))}}
  tx = _tx(name="adamw", weight_decay=0.1, freeze="^Dense_", learning_rate=0.1,
           unfreeze=((1.5, "^Dense_0"),))
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  moved = []
  update = jax.jit(tx.update)
  for _ in range(5):
    updates, state = update(grads, state, params)
    moved.append((bool(jnp.any(updates["Dense_0"]["kernel"] != 0)),
                  bool(jnp.any(updates["Dense_1"]["kernel"] != 0))))
  assert moved == [(False, False)] * 3 + [(True, False)] * 2
  with pytest.raises(UserError, match="set optimizer.freeze too"):
    config = load_config("mnist")
    config.optimizer.unfreeze = ((1, "Dense_0"),)
    validate(config, 1)


def test_lora_trains_only_the_adapters_starts_at_the_base_and_merges_exactly(
    mock_data, tmp_path, capsys):
  config = tiny(load_config("mnist_mlp"), epochs=1.0)
  config.model.hidden = (16,)
  config.model.dropout = 0.0
  config.lora.rank = 2
  config.lora.alpha = 4.0
  config.plots = False
  workdir = str(tmp_path / "lora")
  exp = train.build(config)
  start = exp.task.init_state(exp.plan)
  base = lora.merge(start.params, config)
  assert set(start.params["Dense_0"]) == {"kernel", "bias", "lora_a", "lora_b"}
  chex.assert_trees_all_equal(base["Dense_0"]["kernel"], start.params["Dense_0"]["kernel"])
  train.train_and_evaluate(config, workdir)
  assert "Trainable parameters: 1,652 of 14,382 (LoRA adapters: 1,652, rank 2)." in (
      capsys.readouterr().out)
  state = _state(workdir)
  for name in ("Dense_0", "Dense_1"):
    for leaf in ("kernel", "bias"):
      np.testing.assert_array_equal(state.params[name][leaf], start.params[name][leaf])
    assert np.any(state.params[name]["lora_b"] != 0)
  # The adapted forward pass, written out, equals the task's (merged) one.
  images = jax.random.randint(jax.random.PRNGKey(1), (4, 28, 28, 1), 0, 256).astype(jnp.uint8)
  p, s = state.params, config.lora.alpha / config.lora.rank
  x = exp.task.preprocess(images).reshape(4, -1)
  dense = lambda x, q: x @ q["kernel"] + s * (x @ q["lora_a"]) @ q["lora_b"] + q["bias"]
  expected = dense(jax.nn.relu(dense(x, p["Dense_0"])), p["Dense_1"])
  chex.assert_trees_all_close(exp.task.logits(state, images), expected, atol=1e-5, rtol=1e-5)
  # Merged back for good: the plain model on the merged parameters gives the same logits.
  merged = lora.merge(state.params, config)
  assert "lora_a" not in merged["Dense_0"]
  chex.assert_trees_all_close(
      exp.task.model.apply({"params": merged}, exp.task.preprocess(images), train=False),
      exp.task.logits(state, images), atol=1e-6)


def test_fewer_labels_are_a_balanced_nested_seeded_subset(mock_data):
  from practice_jax.data import in_memory
  labels = np.repeat(np.arange(10), 50)
  train_split = {"label": labels, "image": np.arange(500)}
  small = in_memory.labelled_subset(train_split, 100)
  large = in_memory.labelled_subset(train_split, 300)
  assert np.bincount(small["label"]).tolist() == [10] * 10
  assert set(small["image"]) <= set(large["image"])
  np.testing.assert_array_equal(in_memory.labelled_subset(train_split, 100)["image"],
                                small["image"])
  with pytest.raises(UserError, match="more than the 500 training examples"):
    in_memory.labelled_subset(train_split, 501)
  config = _cnn()
  config.data.train_examples = 5
  with pytest.raises(UserError, match="at least the number of classes"):
    validate(config, 1)
  config.data.train_examples = 20
  config.batch_size = 8
  exp = train.build(config)
  assert exp.source.num_train_examples == 20 and exp.plan.steps_per_epoch == 2


def test_an_old_run_without_the_new_keys_still_resumes(tmp_path):
  from practice_jax import workdir as workdir_lib
  config = load_config("mnist")
  stored = json.loads(config.to_json_best_effort())
  for key in ("init_from", "lora"):
    del stored[key]
  del stored["optimizer"]["unfreeze"]
  del stored["data"]["train_examples"]
  (tmp_path / "checkpoints").mkdir()
  (tmp_path / "config.json").write_text(json.dumps(stored))
  assert workdir_lib.check(str(tmp_path), config, "refuse") == []
  assert workdir_lib.load_config(str(tmp_path)).init_from.workdir == ""
