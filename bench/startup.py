"""Time to the first training step and to a `predict` answer, in fresh processes.

    TFDS_DATA_DIR=/tmp/tfds python bench/startup.py --config configs/mnist.py --repeats 3 \
        [--variant before:PRACTICE_JAX_DATA_CACHE=0 --variant after] [--json FILE]
        [--config.KEY=VALUE ...]

- **main**: ``python -m practice_jax.main --config=CONFIG`` in a fresh workdir, timed from
  just before the launch to each line it prints on the way to its first progress line
  (``[###...] step N/M``, printed after the first chunk of steps): ``Loading`` (the
  imports are done), the model summary (the data is loaded), ``before training`` (the
  step-0 evaluation is done), ``Compiling`` and the first progress line itself (the train
  step is compiled and its first chunk ran). The process is then killed; its workdir is
  thrown away.
- **predict**: ``python -m practice_jax.predict --workdir=RUN digit.png``, launch to exit
  (its answer printed), on a run of CONFIG trained for a few steps here first (or
  ``--predict_workdir``), with a 28x28 drawn digit (for a 1-channel 28x28 dataset).
- **Variants** run alternately (round-robin: a, b, a, b, ...), each a name, optionally
  ``@TREE`` (a copy of the repository to run instead of this one, e.g. an older commit's
  ``git archive``) and environment variables for its processes:
  ``NAME[@TREE][:VAR=VALUE,...]``, e.g. ``nocache:PRACTICE_JAX_DATA_CACHE=0`` (the TFDS
  datasets decoded through TensorFlow on every run, as before the cache) against ``now``. A warm-up round (not counted) fills the compilation cache and the data
  cache, and brings the files into the page cache: the medians are those of a user's
  second and later runs. ``--cold_compile`` passes ``--compilation_cache=`` to main.
- The machine's load average is printed before and after: on a shared machine the wall
  times are upper bounds.

Medians over the repeats; ``--json`` writes every run. Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Lines main prints on the way to its first step, in order: (phase, test on the line).
MARKERS = (
    ("imports", lambda line: line.startswith("Loading ")),
    ("data", lambda line: " parameters): " in line),
    ("step0_eval", lambda line: "| before training" in line),
    ("compiling", lambda line: line.startswith("Compiling the train step")),
    ("first_step", lambda line: line.startswith("[") and " step " in line),
)


def variant_env(spec: str) -> tuple[str, dict[str, str]]:
  """'name@/tree:A=1,B=2' -> ('name', {'A': '1', 'B': '2', 'CWD': '/tree'}); 'name' alone:
  this repository, no variables."""
  name, _, assignments = spec.partition(":")
  name, _, tree = name.partition("@")
  env = {"CWD": os.path.abspath(tree)} if tree else {}
  for item in filter(None, assignments.split(",")):
    key, _, value = item.partition("=")
    env[key] = value
  return name, env


def _cwd_env(env: dict[str, str]) -> tuple[str, dict[str, str]]:
  """(the folder to run in, the process environment) of a variant."""
  env = dict(env)
  return env.pop("CWD", REPO), {**os.environ, **env}


def children_cpu_s() -> float:
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def time_main(config: str, overrides: list[str], env: dict[str, str], workdir: str,
              cold_compile: bool, limit_s: float = 600.0) -> dict[str, float]:
  """Seconds from launch to each marker line of one fresh `main` process, and the CPU
  seconds it used until killed after the first progress line ('cpu')."""
  args = [sys.executable, "-u", "-m", "practice_jax.main", f"--config={config}",
          f"--workdir={workdir}", *overrides]
  if cold_compile:
    args.append("--compilation_cache=")
  times, pending, tail = {}, list(MARKERS), []
  cpu = children_cpu_s()
  launch = time.perf_counter()
  cwd, env = _cwd_env(env)
  process = subprocess.Popen(args, cwd=cwd, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  try:
    for line in process.stdout:
      now = time.perf_counter() - launch
      tail = (tail + [line])[-20:]
      for i, (phase, test) in enumerate(pending):
        if test(line):
          times[phase] = round(now, 3)
          del pending[:i + 1]
          break
      if "first_step" in times or now > limit_s:
        break
  finally:
    process.kill()
    process.wait()
  times["cpu"] = round(children_cpu_s() - cpu, 2)
  if "first_step" not in times:
    raise SystemExit(f"main printed no progress line; its last lines:\n{''.join(tail)}")
  return times


def train_for_predict(config: str, overrides: list[str], workdir: str) -> None:
  """A run of `config` trained for a few steps (predict needs a checkpoint)."""
  result = subprocess.run(
      [sys.executable, "-m", "practice_jax.main", f"--config={config}", f"--workdir={workdir}",
       "--config.num_steps=20", "--config.plots=False", "--ledger=", *overrides],
      cwd=REPO, capture_output=True, text=True)
  if result.returncode != 0:
    raise SystemExit(f"training the run for predict failed:\n{result.stdout[-2000:]}"
                     f"{result.stderr[-2000:]}")


def digit_png(path: str) -> None:
  """A white '7' drawn on black, 28x28, as MNIST's digits are."""
  import numpy as np
  from PIL import Image
  image = np.zeros((28, 28), np.uint8)
  image[6:9, 7:21] = 255
  for row in range(9, 23):
    col = 20 - (row - 9) * 9 // 14
    image[row, col - 1:col + 2] = 255
  Image.fromarray(image).save(path)


def time_predict(workdir: str, image: str, env: dict[str, str]) -> tuple[float, float]:
  """(wall seconds from launch to exit, CPU seconds) of one `predict` process."""
  cpu = children_cpu_s()
  launch = time.perf_counter()
  cwd, env = _cwd_env(env)
  result = subprocess.run([sys.executable, "-m", "practice_jax.predict",
                           f"--workdir={workdir}", image],
                          cwd=cwd, env=env, capture_output=True, text=True)
  took = time.perf_counter() - launch
  if result.returncode != 0 or f"{image}:" not in result.stdout:
    raise SystemExit(f"predict failed ({result.returncode}):\n{result.stdout[-2000:]}"
                     f"{result.stderr[-2000:]}")
  return round(took, 3), round(children_cpu_s() - cpu, 2)


def load_average() -> str:
  try:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
  except OSError:
    return "unknown"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/mnist.py")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--variant", action="append", default=[],
                      help="NAME[:ENV=VALUE,...]; several run alternately (default: one, 'now')")
  parser.add_argument("--skip_main", action="store_true")
  parser.add_argument("--skip_predict", action="store_true")
  parser.add_argument("--predict_workdir", default=None,
                      help="A trained run to predict with (default: one trained here first).")
  parser.add_argument("--cold_compile", action="store_true",
                      help="Run main with the persistent compilation cache off.")
  parser.add_argument("--no_warmup", action="store_true")
  parser.add_argument("--json", default=None)
  args, overrides = parser.parse_known_args()
  variants = [variant_env(v) for v in args.variant or ["now"]]
  scratch = tempfile.mkdtemp(prefix="startup_")
  print(f"load average before: {load_average()}; logs and workdirs in {scratch}", flush=True)
  image = os.path.join(scratch, "digit.png")
  predict_workdir = args.predict_workdir
  if not args.skip_predict:
    digit_png(image)
    if predict_workdir is None:
      predict_workdir = os.path.join(scratch, "trained")
      train_for_predict(args.config, overrides, predict_workdir)
  runs = []
  rounds = range(-1 if not args.no_warmup else 0, args.repeats)
  for r in rounds:
    for name, env in variants:
      record = {"variant": name, "round": r}
      if not args.skip_main:
        workdir = os.path.join(scratch, f"main_{name}_{r}")
        record["main"] = time_main(args.config, overrides, env, workdir, args.cold_compile)
        shutil.rmtree(workdir, ignore_errors=True)
      if not args.skip_predict:
        record["predict_s"], record["predict_cpu_s"] = time_predict(predict_workdir, image, env)
      print(("warm-up " if r < 0 else "") + json.dumps(record), flush=True)
      if r >= 0:
        runs.append(record)
  print(f"load average after: {load_average()}")
  summary = {}
  for name, _ in variants:
    mine = [r for r in runs if r["variant"] == name]
    row = {}
    if not args.skip_main:
      for phase in [m[0] for m in MARKERS] + ["cpu"]:
        values = [r["main"][phase] for r in mine if phase in r["main"]]
        if values:
          row[phase] = round(statistics.median(values), 2)
    if not args.skip_predict:
      row["predict"] = round(statistics.median(r["predict_s"] for r in mine), 2)
      row["predict_cpu"] = round(statistics.median(r["predict_cpu_s"] for r in mine), 2)
    summary[name] = row
    print(f"{name} (median of {len(mine)}, seconds from launch): "
          + ", ".join(f"{k} {v}" for k, v in row.items()))
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump({"runs": runs, "median": summary, "config": args.config,
                 "overrides": overrides, "load_average_after": load_average()}, f, indent=1)


if __name__ == "__main__":
  main()
