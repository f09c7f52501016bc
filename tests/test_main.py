"""Bad input at the command line: one sentence, exit status 2, nothing compiled or written."""

import os
import subprocess
import sys

import pytest

from conftest import REPO

CASES = [
    # (extra arguments, extra environment, words the message must contain)
    (["--config.model.name=resnet50"], {}, "Unknown model (config.model.name) 'resnet50'"),
    (["--config.data.name=mnsit"], {}, "did you mean 'mnist'"),
    (["--config.optimizer.name=adamax"], {}, "config.optimizer.name='adamax' must be one of"),
    (["--config.schedule.name=linear"], {}, "config.schedule.name='linear' must be one of"),
    (["--config.optimizer.learning_rate=0"], {}, "learning_rate=0.0 must be positive"),
    (["--config.optimizer.learning_rate=-0.1"], {}, "must be positive"),
    (["--config.batch_size=0"], {}, "config.batch_size=0 must be positive"),
    (["--config.num_epochs=-1"], {}, "num_epochs=-1.0 must be positive"),
    (["--config.optimizer.learnin_rate=0.1"], {},
     "Unknown config key config.optimizer.learnin_rate: did you mean config.optimizer.learning_rate?"),
    (["--config.batch_size=abc"], {}, "config.batch_size='abc' is not a valid int"),
    (["--config.model.dense_dropout=1.5"], {}, "must be in [0, 1)"),
    (["--config.batch_size=100"],
     {"XLA_FLAGS": "--xla_force_host_platform_device_count=3"}, "divide evenly over the 3 devices"),
    (["--config.parallel.mode=pmpa"], {}, "did you mean 'pmap'"),
    (["--config.parallel.mesh_shape=(3,2)"],
     {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}, "does not fit the 4 devices"),
    (["--config.parallel.mode=pmap", "--config.parallel.mesh_shape=(2,2)"],
     {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}, "shard it with mode='jit'"),
    (["--config.model.conv_impl=winograd"], {}, "conv_impl='winograd' must be one of"),
    (["--num_processes=2", "--process_id=0"], {}, "--coordinator_address is missing"),
    (["--coordinator_address=127.0.0.1:1234", "--num_processes=2", "--process_id=2"], {},
     "--process_id=2 must be in 0..1"),
    (["--config.early_stopping.metric=f1"], {}, "early_stopping.metric='f1' must be one of"),
    (["--config.evaluate_checkpoint=first"], {}, "evaluate_checkpoint='first' must be one of"),
    (["--config.task.augment.crop_padding=-2"], {}, "crop_padding=-2 must be >= 0"),
    # Each model refuses its own bad settings before any data is loaded.
    (["--config.model.padding=foo"], {}, "config.model.padding='foo' must be one of SAME, VALID"),
    (["--config.model.features=(8,0)"], {}, "has the entry 0, which must be at least 1"),
    (["--config.model.pools=(\"avg\",)"], {}, "give one pool per conv stage"),
    # Keys that moved to the part that owns them, and keys at the wrong level.
    (["--config.label_smoothing=0.1"], {}, "use config.task.label_smoothing"),
    (["--config.augment.horizontal_flip=True"], {}, "use config.task.augment.horizontal_flip"),
    (["--config.learning_rate=0.1"], {}, "did you mean config.optimizer.learning_rate?"),
    (["--config.lerning_rate=0.1"], {}, "did you mean config.optimizer.learning_rate?"),
    (["--config.data.block_size=8"], {}, "Unknown config key config.data.block_size"),
    (["--config.optimizer.freeze=(Dense"], {}, "is not a valid regular expression"),
    (["--config.optimizer.no_decay=(bias"], {}, "is not a valid regular expression"),
    (["--config.optimizer.name=adam", "--config.optimizer.weight_decay=0.1"], {},
     "use optimizer.name='adamw'"),
    (["--config.data.manual_dir=/nonexistent/mnist"], {}, "does not exist"),
    (["--config.data.manual_dir=/", "--config.data.data_dir=/tmp/practice_jax_empty_tfds"], {},
     "lacks mnist's file(s)"),
]


def _run(args, env_extra=None, config="configs/mnist.py"):
  env = {**os.environ, **(env_extra or {})}
  cmd = [sys.executable, "-m", "practice_jax.main", "--compilation_cache="] + (
      [f"--config={config}"] if config else [])
  return subprocess.run(cmd + args, cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=120)


def _message(result) -> str:
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert lines, "nothing printed"
  assert "Traceback" not in result.stderr
  assert lines[-1].startswith("error: "), lines[-1]
  return lines[-1]


@pytest.mark.parametrize("args,env,expected", CASES, ids=[c[0][0] for c in CASES])
def test_bad_input_is_refused_in_one_sentence(tmp_path, args, env, expected):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "precious.txt").write_text("keep")
  result = _run(args + [f"--workdir={workdir}"], env)
  assert result.returncode == 2, result.stderr[-2000:]
  assert expected in _message(result)
  assert (workdir / "precious.txt").read_text() == "keep"
  assert [p.name for p in workdir.iterdir()] == ["precious.txt"]   # nothing written


MLP_CASES = [
    (["--config.model.activation=relux"], "must be one of relu, gelu, tanh, sigmoid, silu; "
                                          "did you mean 'relu'?"),
    (["--config.model.hidden=(0,)"], "config.model.hidden=(0,) has the entry 0"),
    (["--config.model.dropout=1.0"], "config.model.dropout=1.0 must be in [0, 1)"),
]


@pytest.mark.parametrize("args,expected", MLP_CASES, ids=[c[0][0] for c in MLP_CASES])
def test_model_settings_are_refused_before_anything_is_written(tmp_path, args, expected):
  workdir = tmp_path / "new_run"
  result = _run(args + [f"--workdir={workdir}"], config="configs/mnist_mlp.py")
  assert result.returncode == 2, result.stderr[-2000:]
  assert expected in _message(result)
  assert not workdir.exists()


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("keep")
  result = _run([f"--workdir={blocker}/run"])
  assert result.returncode == 2
  assert "Cannot write to the workdir" in _message(result)
  assert blocker.read_text() == "keep"


def test_missing_config_file(tmp_path):
  result = _run([f"--workdir={tmp_path}/run"], config="configs/nope.py")
  assert result.returncode == 2
  assert "Config file configs/nope.py does not exist" in _message(result)


def test_no_config_given(tmp_path):
  result = _run([], config=None)
  assert result.returncode == 2
  assert "pass --config=configs/<name>.py" in _message(result)


@pytest.mark.real_data
def test_a_run_fills_the_persistent_compilation_cache(tmp_path, real_mnist_data_dir):
  cache = tmp_path / "xla_cache"
  result = _run([f"--workdir={tmp_path}/run", f"--compilation_cache={cache}",
                 "--config.num_epochs=0.05", "--config.schedule.warmup_epochs=0",
                 "--config.plots=False"], {"TFDS_DATA_DIR": real_mnist_data_dir})
  assert result.returncode == 0, result.stderr[-2000:]
  assert any(p.name.startswith("jit_chunk") for p in cache.iterdir())


def test_help_lists_the_experiments_and_exits_zero():
  result = _run(["--help"], config=None)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "configs/mnist.py" in result.stdout and "configs/shakespeare_gpt_cpu.py" in result.stdout
  assert "--workdir" in result.stdout
