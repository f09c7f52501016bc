"""Per-machine choice of machine-dependent lowerings, measured once and cached (like cuDNN's
benchmark mode).

The first time a CPU convolution with ``conv_impl="auto"`` (models/conv.py) is traced for
a shape, each applicable lowering ("xla", "eigen", "im2col") is compiled and timed on
random data of that shape (forward + input and kernel gradients through `jax.vjp`, median
of 5 runs, the candidates in alternation) and the fastest is used; likewise the 2x2 max pool ("xla":
nn.max_pool's select-and-scatter gradient, "reshape": models/conv.py's comparison
gradient). The measurement runs its own concrete computations in a separate thread, so it
works while another `jax.jit` is tracing. Choices are kept in memory and on disk, keyed by
(CPU model, jax version, backend, operation, shapes, strides, padding, dtype), in

    $PRACTICE_JAX_AUTOTUNE_CACHE   (default ~/.cache/practice_jax/autotune.json)

written atomically; an unreadable file is measured again (with one warning). One line per
new measurement goes to stderr. ``PRACTICE_JAX_AUTOTUNE=0`` turns measuring off: "auto"
then follows the hand-set rule in models/conv.py (also what GPU/TPU and pytest runs use;
set ``PRACTICE_JAX_AUTOTUNE=1`` to measure under pytest). A model's ``conv_impl`` other
than "auto" pins the lowering.

    python -m practice_jax.autotune show             # the cached choices, with the ms of each
    python -m practice_jax.autotune clear            # forget them (this machine's file)
    python -m practice_jax.autotune tune --config=configs/mnist.py   # trace one train step
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import warnings

from collections.abc import Callable, Sequence

import numpy as np

REPEATS = 5
_VERSION = 1
_lock = threading.RLock()
_memory: dict[str, dict] | None = None      # key -> entry, loaded from disk on first use
_loaded_from: str | None = None
_warned: set[str] = set()


def enabled() -> bool:
  """Whether "auto" measures: PRACTICE_JAX_AUTOTUNE=0/1, else on except under pytest."""
  value = os.environ.get("PRACTICE_JAX_AUTOTUNE")
  if value is None:
    return "PYTEST_CURRENT_TEST" not in os.environ
  return value.strip().lower() not in ("0", "false", "off", "no", "")


def cache_path() -> str:
  return os.environ.get("PRACTICE_JAX_AUTOTUNE_CACHE") or os.path.join(
      os.path.expanduser("~"), ".cache", "practice_jax", "autotune.json")


def _cpuinfo(field: str) -> str | None:
  """The value of the first `field` line of /proc/cpuinfo, or None."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith(field):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return None


def cpu_flags() -> frozenset[str]:
  """The CPU's feature flags (/proc/cpuinfo: avx2, avx512f, amx_bf16...); empty if unknown."""
  return frozenset((_cpuinfo("flags") or "").split())


def cpu_model() -> str:
  """The CPU's model name (/proc/cpuinfo), else platform.processor()."""
  return _cpuinfo("model name") or platform.processor() or platform.machine() or "unknown"


def _machine() -> dict:
  import jax
  return {"cpu": cpu_model(), "jax": jax.__version__, "backend": jax.default_backend()}


def _read(path: str) -> dict[str, dict]:
  """The entries in the file at `path`; {} (and one warning) if it cannot be read."""
  if not os.path.exists(path):
    return {}
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
    entries = data["entries"]
    if data.get("version") != _VERSION or not isinstance(entries, dict):
      raise ValueError(f"version {data.get('version')!r}")
    return entries
  except (OSError, ValueError, KeyError, TypeError) as e:
    if path not in _warned:
      _warned.add(path)
      warnings.warn(f"autotune cache {path} is unreadable ({e}); measuring again and "
                    f"rewriting it.", RuntimeWarning, stacklevel=3)
    return {}


def _entries() -> dict[str, dict]:
  global _memory, _loaded_from
  path = cache_path()
  if _memory is None or _loaded_from != path:
    _memory, _loaded_from = _read(path), path
  return _memory


def _write(entries: dict[str, dict]) -> None:
  """Atomically (temp file + os.replace) writes `entries`, merged with what another
  process may have written meanwhile."""
  path = cache_path()
  merged = {**_read(path), **entries}
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".autotune-", dir=os.path.dirname(os.path.abspath(path)))
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      json.dump({"version": _VERSION, "entries": merged}, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def clear() -> None:
  global _memory
  with _lock:
    _memory = {}
    if os.path.exists(cache_path()):
      os.remove(cache_path())


def _in_thread(fn: Callable[[], dict]) -> dict:
  """fn() in a fresh thread: its jax computations are concrete, whatever trace is active
  in the calling thread (JAX's trace state is thread-local)."""
  box = {}

  def target():
    try:
      box["value"] = fn()
    except BaseException as e:          # re-raised in the caller
      box["error"] = e
  thread = threading.Thread(target=target, name="practice_jax-autotune")
  thread.start()
  thread.join()
  if "error" in box:
    raise box["error"]
  return box["value"]


def choose(op: str, fields: dict, candidates: Sequence[str],
           measure: Callable[[Sequence[str]], dict], describe: str) -> str:
  """The fastest of `candidates` for the operation `op` with `fields` (its shapes...): from
  the cache, else measured now with measure(candidates) -> {candidate: ms}, cached and
  reported."""
  if len(candidates) == 1:
    return candidates[0]
  fields = {**_machine(), "op": op, **fields}
  key = json.dumps(fields, sort_keys=True)
  with _lock:
    entry = _entries().get(key)
    if entry is not None and entry.get("choice") in candidates:
      return entry["choice"]
    ms = _in_thread(lambda: {c: float(t) for c, t in measure(tuple(candidates)).items()})
    choice = min(candidates, key=lambda c: ms[c])
    entry = {**fields, "describe": describe, "ms": ms, "choice": choice}
    _entries()[key] = entry
    try:
      _write({key: entry})
    except OSError as e:
      if "write" not in _warned:
        _warned.add("write")
        warnings.warn(f"could not write the autotune cache {cache_path()}: {e}",
                      RuntimeWarning, stacklevel=2)
  ranked = ", ".join(f"{c} {ms[c]:.1f} ms" for c in sorted(candidates, key=ms.get))
  print(f"autotune: {describe}: {ranked} -> {choice}", file=sys.stderr, flush=True)
  return choice


def time_ms(fns: dict[str, tuple[Callable, Sequence]], repeats: int = REPEATS,
            compiler_options: dict | None = None) -> dict[str, float]:
  """Median wall time (ms) of each jit-compiled fn(*args) of `fns` {name: (fn, args)},
  after one warm-up call each; the candidates run in alternation, so that a change in the
  machine's load falls on all of them alike. `compiler_options`: XLA options every fn is
  compiled with (e.g. conv.NO_YNN_CONVOLUTIONS, as the CPU train chunk may be)."""
  import jax
  compiled = {name: (jax.jit(fn).lower(*args).compile(compiler_options), args)
              for name, (fn, args) in fns.items()}
  times = {name: [] for name in fns}
  for round_ in range(repeats + 1):
    for name, (run, args) in compiled.items():
      start = time.perf_counter()
      jax.block_until_ready(run(*args))
      if round_:                                  # round 0 warms up
        times[name].append(time.perf_counter() - start)
  return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def _random(shape: Sequence[int], dtype: str, seed: int) -> np.ndarray:
  import jax.numpy as jnp
  return np.random.default_rng(seed).standard_normal(shape).astype(jnp.dtype(dtype))


def _forward_and_gradients(f: Callable, *args):
  import jax
  y, vjp = jax.vjp(f, *args)
  return y, vjp(y)


def measure_conv(impls: Sequence[str], x_shape: Sequence[int], k_shape: Sequence[int],
                 strides: Sequence[int], pads: Sequence[Sequence[int]], dtype: str
                 ) -> dict[str, float]:
  """{impl: ms} of forward + input and kernel gradients of conv2d(impl) on random data."""
  from practice_jax.models import conv
  pads = [tuple(p) for p in pads]
  x, k = _random(x_shape, dtype, 0), _random(k_shape, dtype, 1)

  def fn(impl):
    return lambda x, k: _forward_and_gradients(
        lambda x, k: conv.conv2d(x, k, tuple(strides), pads, impl), x, k)
  return time_ms({impl: (fn(impl), (x, k)) for impl in impls})


def measure_max_pool(impls: Sequence[str], x_shape: Sequence[int], dtype: str
                     ) -> dict[str, float]:
  """{impl: ms} of forward + gradient of the 2x2 max pool (impl "xla" or "reshape")."""
  from practice_jax.models import conv
  x = _random(x_shape, dtype, 0)

  def fn(impl):
    return lambda x: _forward_and_gradients(
        lambda x: conv.pool("max", x, "xla" if impl == "xla" else "eigen"), x)
  return time_ms({impl: (fn(impl), (x,)) for impl in impls})


def conv_choice(x_shape, k_shape, strides, pads, dtype, candidates: Sequence[str]) -> str:
  kh, kw, cin, cout = k_shape
  out = [(n + lo + hi - k) // s + 1 for n, (lo, hi), k, s
         in zip(x_shape[1:3], pads, (kh, kw), strides)]
  describe = (f"conv {x_shape[1]}x{x_shape[2]}x{cin}->{out[0]}x{out[1]}x{cout} "
              f"{kh}x{kw}/{strides[0]}{'' if strides[0] == strides[1] else 'x%d' % strides[1]}"
              f" (batch {x_shape[0]}, {dtype})")
  fields = {"x": list(x_shape), "kernel": list(k_shape), "strides": list(strides),
            "pads": [list(p) for p in pads], "dtype": str(dtype)}
  return choose("conv", fields, candidates,
                lambda cs: measure_conv(cs, x_shape, k_shape, strides, pads, str(dtype)),
                describe)


def max_pool_choice(x_shape, dtype) -> str:
  describe = f"max_pool 2x2 {'x'.join(map(str, x_shape[1:]))} (batch {x_shape[0]}, {dtype})"
  return choose("max_pool", {"x": list(x_shape), "dtype": str(dtype)}, ("reshape", "xla"),
                lambda cs: measure_max_pool(cs, x_shape, str(dtype)), describe)


def table(entries: dict[str, dict] | None = None) -> str:
  """The cached choices as text: one row per shape with each candidate's ms."""
  entries = _read(cache_path()) if entries is None else entries
  if not entries:
    return f"no autotune choices cached in {cache_path()}"
  here = _machine()
  lines = [f"autotune cache {cache_path()} ({len(entries)} entries); this machine: "
           f"{here['cpu']}, jax {here['jax']}, {here['backend']}"]
  rows = sorted(entries.values(), key=lambda e: (e.get("cpu", ""), e.get("jax", ""),
                                                 e.get("op", ""), e.get("describe", "")))
  last = None
  for e in rows:
    machine = (e.get("cpu"), e.get("jax"), e.get("backend"))
    if machine != last:
      lines.append(f"\n{machine[0]}, jax {machine[1]}, {machine[2]}:")
      last = machine
    ms = e.get("ms", {})
    ranked = ", ".join(f"{c} {ms[c]:.1f} ms" for c in sorted(ms, key=ms.get))
    lines.append(f"  {e.get('describe', '?'):<52} -> {e.get('choice', '?'):<8} ({ranked})")
  return "\n".join(lines)


def tune(config_path: str) -> None:
  """Traces the train step of the config's task once (on its real data's shapes), which
  measures every "auto" lowering it uses that is not cached yet."""
  import jax

  from practice_jax import train
  from practice_jax.main import _load_config_file
  os.environ["PRACTICE_JAX_AUTOTUNE"] = "1"
  config = _load_config_file(config_path)
  exp = train.build(config)
  parallel, task = exp.parallel, exp.task
  state = parallel.put_state(task.init_state(exp.plan))
  exp.source.bind(parallel)
  batches = parallel.global_batches(exp.source.batches(0, 1, exp.local_batch),
                                    config.batch_size)
  one = jax.tree.map(lambda a: a[0], batches)
  jax.jit(task.train_step).trace(state, one)


def main(argv: Sequence[str] | None = None) -> int:
  import argparse
  parser = argparse.ArgumentParser(prog="python -m practice_jax.autotune",
                                   description=__doc__.splitlines()[0])
  parser.add_argument("command", nargs="?", default="show", choices=("show", "clear", "tune"))
  parser.add_argument("--config", help="config file whose train step `tune` traces")
  args = parser.parse_args(argv)
  if args.command == "clear":
    clear()
    print(f"cleared {cache_path()}")
  elif args.command == "tune":
    if not args.config:
      parser.error("tune needs --config=configs/X.py")
    tune(args.config)
    print(table())
  else:
    print(table())
  return 0


if __name__ == "__main__":
  sys.exit(main())
