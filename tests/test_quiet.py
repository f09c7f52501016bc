"""A user sees only practice_jax's own lines; --verbosity shows the libraries' too.

Each command runs in a process of its own, as a user starts it, because what is hidden
is decided before TensorFlow and XLA load (practice_jax/quiet.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, SHARED_DATA
from practice_jax import quiet

# Lines that are not practice_jax's: C++ and absl log lines, Python warnings, TFDS's
# banners and progress bars (carriage returns, cursor moves, rates), tracebacks.
FOREIGN = re.compile(
    r"^[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\]|absl::InitializeLog|^WARNING|\w+Warning: "
    r"|Downloading and preparing|downloaded and prepared|\x1b\[|\r|[0-9.]+ ?(it|MiB|url|file)/s"
    r"|Traceback")

MOCK = str(REPO / "tests" / "helpers" / "with_mock_tfds.py")


def foreign_lines(text: str) -> list[str]:
  return [line for line in text.split("\n") if FOREIGN.search(line)]


def run(args: list[str], tfds_dir, **extra_env: str) -> subprocess.CompletedProcess:
  env = {**os.environ, "TFDS_DATA_DIR": str(tfds_dir), "PYTHONPATH": str(REPO), **extra_env}
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)


@pytest.fixture(scope="module")
def mock_run(tmp_path_factory):
  """A short mnist_mlp run on mock data, through the real command line: (result, workdir)."""
  tmp = tmp_path_factory.mktemp("quiet")
  config = tmp / "tiny_mnist_mlp.py"
  config.write_text(
      "import sys\n"
      f"sys.path.insert(0, {str(REPO / 'tests')!r})\n"
      "from conftest import load_config, tiny\n\n\n"
      "def get_config():\n"
      "  return tiny(load_config('mnist_mlp'), epochs=1.0)\n")
  workdir = tmp / "run"
  result = run([MOCK, "practice_jax.main", f"--config={config}", f"--workdir={workdir}",
                "--compilation_cache="], tmp / "tfds")
  return result, workdir


def test_main_shows_only_its_own_lines(mock_run):
  result, workdir = mock_run
  assert result.returncode == 0, result.stderr[-3000:]
  assert foreign_lines(result.stdout + result.stderr) == [], result.stdout + result.stderr
  assert "test" in result.stdout and (workdir / "run.json").is_file()


def _digit(path) -> None:
  from PIL import Image
  image = np.full((60, 40), 255, np.uint8)    # a dark stroke on white paper
  image[10:50, 18:23] = 0
  Image.fromarray(image).save(path)


def test_predict_shows_only_its_own_lines_and_verbosity_shows_the_rest(mock_run, tmp_path):
  _, workdir = mock_run
  _digit(tmp_path / "one.png")
  args = ["-m", "practice_jax.predict", f"--workdir={workdir}", "--resize",
          str(tmp_path / "one.png")]
  result = run(args, tmp_path / "tfds")
  assert result.returncode == 0, result.stderr[-3000:]
  assert foreign_lines(result.stdout + result.stderr) == [], result.stdout + result.stderr
  assert result.stdout.startswith(f"{tmp_path / 'one.png'} [inverted: dark on light; ")
  verbose = run(args + ["--verbosity=0"], tmp_path / "tfds")
  assert verbose.returncode == 0, verbose.stderr[-3000:]
  assert foreign_lines(verbose.stderr), "--verbosity=0 should show the libraries' lines"
  assert verbose.stdout == result.stdout


def test_a_refused_image_is_one_sentence(mock_run, tmp_path):
  _, workdir = mock_run
  _digit(tmp_path / "big.png")
  result = run(["-m", "practice_jax.predict", f"--workdir={workdir}",
                str(tmp_path / "big.png")], tmp_path / "tfds")
  assert result.returncode == 2
  assert result.stdout == ""
  assert result.stderr.strip().splitlines() == [
      f"error: {tmp_path / 'big.png'} is 40x60 pixels but the model takes 28x28; pass "
      f"--resize to fit it."]


@pytest.mark.real_data
def test_prepare_tiny_shakespeare_says_what_it_did_in_characters(tmp_path):
  manual = SHARED_DATA / "tiny_shakespeare"
  if not (manual / "input.txt").is_file():
    pytest.skip(f"Tiny Shakespeare's input.txt not found in {manual}")
  result = run(["-m", "practice_jax.data.prepare", "tiny_shakespeare",
                f"--manual_dir={manual}"], tmp_path / "tfds",
               PRACTICE_JAX_DATA_CACHE=str(tmp_path / "cache"))
  assert result.returncode == 0, result.stderr[-3000:]
  output = result.stdout + result.stderr
  assert foreign_lines(output) == [], output
  lines = output.strip().split("\n")
  assert lines[0].startswith("Preparing tiny_shakespeare in ")
  assert lines[1].startswith("Decoding tiny_shakespeare (test and train and validation) "
                             "through TFDS, once")        # the texts, for later runs
  assert ("(train: 1,003,854 characters, validation: 55,770 characters, test: 55,770 "
          "characters; ") in lines[-1]
  assert len(lines) == 3
  assert len(list((tmp_path / "cache" / "tiny_shakespeare").glob("*/text.npy"))) == 3


def test_verbosity_is_recognised_in_every_spelling():
  for argv in (["p", "--verbosity=1"], ["p", "-v", "1"], ["p", "--v=0"], ["p", "-verbosity=0"]):
    assert quiet.verbosity_given(argv), argv
  for argv in (["p"], ["p", "--workdir=v"], ["p", "--", "--verbosity=1"], ["p", "--vocab=3"]):
    assert not quiet.verbosity_given(argv), argv


def test_native_log_lines_are_dropped_and_other_lines_kept(capfd, monkeypatch):
  monkeypatch.setattr(quiet, "_quiet", True)
  with quiet.native_notices_dropped():
    os.write(2, b"I0000 00:00:1796139274.668195    4009 port.cc:153] oneDNN custom ops\n"
                b"WARNING: All log messages before absl::InitializeLog() is called are "
                b"written to STDERR\n"
                b"E0000 00:00:1796139275.708091    4009 cuda_platform.cc:52] failed call to "
                b"cuInit: UNKNOWN ERROR (303)\n"
                b"something else\n")
  assert capfd.readouterr().err == "something else\n"


def test_the_filter_keeps_own_records_errors_and_jax_platform_warnings():
  import logging

  def record(name, level, pathname):
    return logging.LogRecord(name, level, pathname, 1, "message", None, None)

  keep = quiet._OwnLinesOnly().filter
  own = str(REPO / "practice_jax" / "train.py")
  orbax = "/venv/site-packages/orbax/checkpoint/checkpoint_manager.py"
  assert keep(record("absl", logging.WARNING, own))
  assert keep(record("absl", logging.INFO, own))
  assert not keep(record("absl", logging.WARNING, orbax))
  # orbax's background-save errors are raised by checkpoint.py as one sentence instead.
  assert not keep(record("absl", logging.ERROR, orbax))
  assert keep(record("absl", logging.ERROR, "/venv/site-packages/tensorflow_datasets/x.py"))
  assert keep(record("jax._src.xla_bridge", logging.WARNING, "/venv/jax/_src/xla_bridge.py"))
  assert not keep(record("jax._src.xla_bridge", logging.INFO, "/venv/jax/_src/xla_bridge.py"))


def test_closed_event_loop_tracebacks_are_dropped_and_other_tracebacks_kept():
  import io
  sink = io.StringIO()
  err = quiet._WithoutClosedLoopTracebacks(sink)
  closed = ('Traceback (most recent call last):\n'
            '  File "asyncio/base_events.py", line 806, in call_soon_threadsafe\n'
            '    self._check_closed()\n'
            "RuntimeError: Event loop is closed\n")
  err.write("error: The disk is full.\n")
  err.write(closed)
  err.write(closed[:40])                 # a traceback may arrive in pieces
  err.write(closed[40:])
  err.write('Traceback (most recent call last):\n  File "x.py", line 1\nValueError: a bug\n')
  assert sink.getvalue() == ('error: The disk is full.\nTraceback (most recent call last):\n'
                             '  File "x.py", line 1\nValueError: a bug\n')
