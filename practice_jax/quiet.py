"""Keep the console for practice_jax's own lines.

Every command used to start with TensorFlow's and XLA's start-up notices (oneDNN,
CUDA probing on a CPU machine, which reads as a failure: ``failed call to cuInit``),
orbax's read-only warnings and TFDS's progress bars and banners. They are about the
libraries' machinery, not the experiment, so by default they are hidden:

- native (C++) logging: ``TF_CPP_MIN_LOG_LEVEL=2`` (errors still show) is set before
  TensorFlow or XLA load, and the notices TensorFlow prints while its libraries load,
  before that setting is read, are dropped from stderr (`native_notices_dropped`);
- Python logging: records of other packages below ERROR are dropped (the absl handler
  has a filter), except JAX's word on which platform it fell back to (a GPU machine
  without a CUDA-enabled jaxlib); other packages' Python warnings are ignored;
- TFDS: no progress bars, and its banners while preparing a dataset are dropped
  (`foreign_output_dropped`).

absl's ``--verbosity`` (or ``-v``) given on the command line turns all of this off, so
``--verbosity=0`` shows everything at INFO. Each entry point calls `install()` first
thing, before TensorFlow or JAX is imported; nothing changes for code that only imports
the package (tests, notebooks).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# Lines of C++ logging (glog/absl format: "I0000 00:00:1796139274.668 4009 port.cc:153] ...")
# and the banners and continuation lines TensorFlow writes with them while loading.
_NATIVE_LINE = re.compile(
    r"^([IWEF]\d{4} [\d:.]+ +\d+ [^ \]]+:\d+\] "
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|To enable the following instructions: .* rebuild TensorFlow)")

# Other packages' loggers whose warnings a user needs: JAX saying it found a GPU it
# cannot use and runs on the CPU instead.
_KEPT_LOGGERS = ("jax._src.xla_bridge",)

_quiet = False


def verbosity_given(argv: Sequence[str]) -> bool:
  """Whether absl's --verbosity / -v is among the command-line arguments."""
  for arg in argv[1:]:
    if arg == "--":
      break
    if arg.startswith("-") and arg.lstrip("-").split("=", 1)[0] in ("v", "verbosity"):
      return True
  return False


class _OwnLinesOnly(logging.Filter):
  """Lets through practice_jax's own records, everyone's errors and a few warnings."""

  def filter(self, record: logging.LogRecord) -> bool:
    own = os.path.abspath(record.pathname).startswith(_PACKAGE_DIR + os.sep)
    kept = record.name in _KEPT_LOGGERS and record.levelno >= logging.WARNING
    # orbax logs every failure of a background save from each of its threads, with a
    # traceback each (a full disk: ~450 lines); checkpoint.py raises the failure itself,
    # as one sentence where it can name it, so those records add nothing.
    # asyncio's "Task exception was never retrieved" is the same failure once more, for
    # each of orbax's writes that were still running.
    from_orbax = (f"{os.sep}orbax{os.sep}" in record.pathname or record.name == "asyncio"
                  or f"{os.sep}asyncio{os.sep}" in record.pathname)
    return own or kept or (record.levelno >= logging.ERROR and not from_orbax)


def install(argv: Sequence[str] | None = None) -> None:
  """Hides other libraries' lines unless --verbosity is given; call it before TensorFlow,
  JAX or TFDS is imported. Calling it again changes nothing."""
  global _quiet
  argv = sys.argv if argv is None else argv
  if _quiet or verbosity_given(argv):
    return
  _quiet = True
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from absl import logging as absl_logging
  absl_logging.get_absl_handler().addFilter(_OwnLinesOnly())
  warnings.filterwarnings("ignore")
  warnings.filterwarnings("default", module=r"practice_jax(\.|$)")
  sys.stderr = _WithoutClosedLoopTracebacks(sys.stderr)


class _WithoutClosedLoopTracebacks(io.TextIOBase):
  """sys.stderr without the tracebacks that end in 'RuntimeError: Event loop is closed':
  tensorstore's write callbacks print one for every write still in flight when orbax
  closes its event loop after a failed or abandoned save (eight on a corrupt-checkpoint
  fallback, dozens on a full disk), although practice_jax has handled the failure. They
  come from several threads at once, so lines are gathered per thread. Every other line,
  every other traceback included, passes through unchanged."""

  def __init__(self, stream):
    self._stream = stream
    self._held: dict[int, list[str]] = {}
    self._partial: dict[int, str] = {}
    self._lock = threading.Lock()

  def write(self, text: str) -> int:
    me = threading.get_ident()
    with self._lock:
      lines = (self._partial.pop(me, "") + text).splitlines(keepends=True)
      if lines and not lines[-1].endswith("\n"):
        self._partial[me] = lines.pop()
      held = self._held.setdefault(me, [])
      for line in lines:
        if held or line.startswith("Traceback (most recent call last):"):
          held.append(line)
          if not line[:1].isspace() and not line.startswith("Traceback") and line.strip():
            block = "".join(held)          # the exception line ends the traceback
            held.clear()
            if "Event loop is closed" not in line:
              self._stream.write(block)
        else:
          self._stream.write(line)
      partial = self._partial.get(me, "")
      if partial and not held and not "Traceback".startswith(partial[:9]):
        self._stream.write(self._partial.pop(me))   # a prompt or progress: at once
    return len(text)

  def flush(self) -> None:
    with self._lock:
      for me in [m for m, text in self._partial.items() if not self._held.get(m)]:
        self._stream.write(self._partial.pop(me))
    self._stream.flush()

  def fileno(self) -> int:
    return self._stream.fileno()

  def isatty(self) -> bool:
    return self._stream.isatty()

  @property
  def encoding(self) -> str:
    return self._stream.encoding

  @property
  def errors(self) -> str | None:
    return self._stream.errors

  def __getattr__(self, name: str):      # buffer, reconfigure, ...: the real stream's
    return getattr(self._stream, name)


def is_quiet() -> bool:
  return _quiet


@contextlib.contextmanager
def native_notices_dropped() -> Iterator[None]:
  """Drops the C++ log lines written to stderr (file descriptor 2) inside the block,
  e.g. while TensorFlow's libraries load; every other line written meanwhile is passed on
  afterwards, so nothing else is lost."""
  if not _quiet:
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile(mode="w+b") as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      text = captured.read().decode("utf-8", "replace")
      kept = [line for line in text.splitlines(keepends=True) if not _NATIVE_LINE.match(line)]
      if kept:
        sys.stderr.write("".join(kept))
        sys.stderr.flush()


@contextlib.contextmanager
def foreign_output_dropped() -> Iterator[None]:
  """Drops what Python code inside the block prints to stdout/stderr (TFDS's 'Downloading
  and preparing dataset Unknown size...' banners while it reads local files); an exception
  still propagates with its message."""
  if not _quiet:
    yield
    return
  sink = io.StringIO()
  with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
    yield


def quiet_tfds(tfds) -> None:
  """No TFDS progress bars (their carriage returns leave debris in logs and pipes)."""
  if _quiet:
    tfds.disable_progress_bar()
