"""Train-step speed and time to target of the Tiny Shakespeare language models, practice_jax
against PyTorch (bench/torch_lm.py: nanoGPT's model and loop, a char-rnn nn.LSTM),
side by side in one run.

    python bench/lm_speed.py [--models gpt,lstm] [--steps 100] [--repeats 3]
                             [--target_repeats 0] [--torch_python /tmp/torchenv/bin/python]
                             [--matmul_dtype config]

Steps/s: practice_jax runs configs/shakespeare_gpt_cpu.py / configs/shakespeare_lstm.py's
model, optimizer and batch (for the GPT with AdamW, nanoGPT's optimizer, whatever the
config trains with) through the loop's compiled chunk (parallel.compile_train_chunk,
`steps_per_dispatch` steps per call, batches gathered on the device as the loop does);
PyTorch runs in a worker process of `--torch_python` (torch stays out of the project's
venv), nanoGPT's step (batch drawn, forward, backward, clipping, AdamW). After a warm-up
the two alternate, `--repeats` rounds of `--steps` steps each; medians and the ratio.
With `--target_repeats N`, then N alternating pairs of whole training runs, each from
process start: practice_jax's `python -m practice_jax.main --config
configs/shakespeare_gpt_cpu.py` (through bench/time_to_target.py's run_once) and
`torch_lm.py train` (nanoGPT's 2000 iterations): time to validation <= `--target`, and
to the end. Both use every core. practice_jax runs each config's own
config.model.matmul_dtype ("auto" for the GPT: its Dense layers' matmuls in bfloat16 with
float32 accumulation on CPUs with AMX-BF16, float32 elsewhere, models/precision.py), or
the `--matmul_dtype` given (float32, bfloat16, auto); PyTorch stays in float32, as
nanoGPT's train.py runs on a CPU. Not part of the tests.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DATA = "/work/shared/data/tiny_shakespeare/input.txt"
CONFIGS = {"gpt": "shakespeare_gpt_cpu", "lstm": "shakespeare_lstm"}
STEP_OPTIMIZER = {"gpt": "adamw"}


def _load(path: str, name: str):
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def practice_jax_runner(model: str, data: str = DATA, optimizer: str | None = None,
                        **overrides):
  """run(steps) -> seconds for `steps` train steps of the config's model, in chunks of
  its steps_per_dispatch (the last one shorter); `optimizer` replaces the config's
  optimizer.name, `overrides` set config.model keys."""
  import jax

  from practice_jax import optim
  from practice_jax.data.text import Vocabulary, windows_source
  from practice_jax.parallel import DataParallel
  from practice_jax.tasks.language_model import LanguageModelTask

  config = _load(os.path.join(REPO, "configs", f"{CONFIGS[model]}.py"), model).get_config()
  for key, value in overrides.items():
    config.model[key] = value
  if optimizer:
    config.optimizer.name = optimizer
  with open(data, encoding="utf-8") as f:
    text = f.read()
  vocab = Vocabulary.from_text(text)
  tokens = vocab.encode(text)
  n = len(tokens)
  source = windows_source(tokens[:int(n * 0.9)], {}, vocab, config.data.block_size, 0,
                          config.seed)
  parallel = DataParallel()
  task = LanguageModelTask(config, source, parallel)
  state = [parallel.put_state(task.init_state(optim.Plan(total_steps=config.num_steps)))]
  source.bind(parallel)
  chunk = parallel.compile_train_chunk(task.train_step, config.batch_size,
                                       unroll=task.unroll_on_cpu)
  per_call = config.steps_per_dispatch
  position = [0]

  def run(steps: int) -> float:
    begin = time.perf_counter()
    done, sums = 0, None
    while done < steps:
      k = min(per_call, steps - done)
      batches = source.batches(position[0], k, config.batch_size)
      state[0], sums, _ = chunk(state[0], batches, k)
      done += k
      position[0] += k
    jax.block_until_ready(sums)
    return time.perf_counter() - begin
  return run


class TorchWorker:
  """bench/torch_lm.py's worker in `python`: run(steps) -> seconds."""

  def __init__(self, python: str, model: str, data: str, warmup: int):
    self.proc = subprocess.Popen(
        [python, os.path.join(HERE, "torch_lm.py"), "worker", "--model", model,
         "--data", data, "--steps", str(warmup)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = self.proc.stdout.readline().strip()
    if line != "ready":
      raise RuntimeError(f"the torch worker did not start (got {line!r})")

  def __call__(self, steps: int) -> float:
    self.proc.stdin.write(f"run {steps}\n")
    self.proc.stdin.flush()
    return float(self.proc.stdout.readline())

  def close(self) -> None:
    self.proc.stdin.close()
    self.proc.wait()


def step_speed(model: str, args) -> dict:
  start = time.perf_counter()
  # nanoGPT's optimizer for the GPT's step, whatever the config trains with (Muon): the
  # same work on both sides.
  ours = practice_jax_runner(model, args.data, optimizer=STEP_OPTIMIZER.get(model),
                             **_dtypes(args))
  # Warm-up: compiles every chunk length used below.
  ours(args.steps)
  setup = time.perf_counter() - start
  torch_run = TorchWorker(args.torch_python, model, args.data, args.steps)
  rates = {"practice_jax": [], "torch": []}
  try:
    for _ in range(args.repeats):
      rates["practice_jax"].append(args.steps / ours(args.steps))
      rates["torch"].append(args.steps / torch_run(args.steps))
  finally:
    torch_run.close()
  medians = {k: statistics.median(v) for k, v in rates.items()}
  return {"model": model, "steps": args.steps, "steps_per_s": medians,
          "ratio": medians["practice_jax"] / medians["torch"],
          "all_runs": rates, "practice_jax_setup_s": round(setup, 1),
          "load_average": os.getloadavg()}


def _dtypes(args) -> dict:
  return {} if args.matmul_dtype == "config" else {"matmul_dtype": args.matmul_dtype}


def time_to_target(args) -> dict:
  ttt = _load(os.path.join(HERE, "time_to_target.py"), "time_to_target")
  logdir = tempfile.mkdtemp(prefix="lm_speed_")
  ours, theirs = [], []
  for i in range(args.target_repeats):
    overrides = [f"--config.model.{k}={v}" for k, v in _dtypes(args).items()]
    ours.append(ttt.run_once(os.path.join(REPO, "configs", "shakespeare_gpt_cpu.py"),
                             overrides, "loss", args.target, logdir, i))
    print("practice_jax", json.dumps(ours[-1]), f"load {os.getloadavg()[0]:.2f}", flush=True)
    launch = time.time()
    out = subprocess.run([args.torch_python, os.path.join(HERE, "torch_lm.py"), "train",
                          "--data", args.data, "--target", str(args.target)],
                         capture_output=True, text=True, check=True).stdout
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    evals = [r for r in records if "val" in r]
    hits = [r for r in evals if r["val"] <= args.target]
    theirs.append({"exit_s": round(time.time() - launch, 2),
                   "to_target_s": round(hits[0]["time"] - launch, 2) if hits else None,
                   "iter": hits[0]["iter"] if hits else None,
                   "final_validation_loss": evals[-1]["val"]})
    print("torch", json.dumps(theirs[-1]), f"load {os.getloadavg()[0]:.2f}", flush=True)

  def median(runs, key):
    values = [r[key] for r in runs if r[key] is not None]
    return statistics.median(values) if values else None
  return {"practice_jax": ours, "torch": theirs,
          "practice_jax_to_target_s": median(ours, "to_target_s"),
          "practice_jax_exit_s": median(ours, "exit_s"),
          "torch_to_target_s": median(theirs, "to_target_s"),
          "torch_exit_s": median(theirs, "exit_s")}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="gpt,lstm")
  parser.add_argument("--steps", type=int, default=100)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--target_repeats", type=int, default=0)
  parser.add_argument("--target", type=float, default=1.88)
  parser.add_argument("--data", default=DATA)
  parser.add_argument("--torch_python", default="/tmp/torchenv/bin/python")
  parser.add_argument("--matmul_dtype", default="config",
                      choices=("config", "float32", "bfloat16", "auto"))
  parser.add_argument("--out", default="bench/results/lm_speed.json")
  args = parser.parse_args()
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  result = {"cpu": cpu, "cpus": os.cpu_count(), "matmul_dtype": args.matmul_dtype,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "speed": []}
  print(f"{cpu}, {os.cpu_count()} cores, {result['date']}")
  for model in args.models.split(","):
    r = step_speed(model, args)
    result["speed"].append(r)
    s = r["steps_per_s"]
    print(f"{model}: practice_jax {s['practice_jax']:.2f} steps/s, torch {s['torch']:.2f} "
          f"steps/s, ratio {r['ratio']:.2f}x (medians of {args.repeats} x {args.steps} "
          f"steps; load average {' '.join(f'{v:.2f}' for v in r['load_average'])})",
          flush=True)
  if args.target_repeats:
    r = result["time_to_target"] = time_to_target(args)
    fmt = lambda v: "never" if v is None else f"{v:.1f} s"  # noqa: E731
    print(f"GPT to validation <= {args.target} (medians of {args.target_repeats}): "
          f"practice_jax {fmt(r['practice_jax_to_target_s'])} (exit "
          f"{fmt(r['practice_jax_exit_s'])}), torch {fmt(r['torch_to_target_s'])} "
          f"(2000 iterations, exit {fmt(r['torch_exit_s'])}); load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
  result["load_average_end"] = os.getloadavg()
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)


if __name__ == "__main__":
  main()
