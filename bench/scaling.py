"""How cost grows: train steps/s, examples/s, FLOPs and memory of the CNN (configs/mnist.py)
and the char GPT (configs/shakespeare_gpt_cpu.py) against the batch size, the model's
width and the number of (simulated) devices; a JSON of every point and a PNG (issue #21).

    python bench/scaling.py [--models cnn,gpt] [--rounds 5] [--round_s 0.3]
                            [--devices 1,2,4,8] [--out bench/results] [--quick]

Sweeps (each point is the config with one thing changed):

- batch: the global batch (CNN 16..512, GPT 4..64), one device, width 1x;
- width: every width setting of the model scaled by 0.5x, 1x, 2x, 4x (the CNN's conv
  `features` and `dense` sizes, the GPT's `embed_dim`; depth, heads and context kept) at
  the config's own batch;
- devices: 1, 2, 4, 8 CPU devices simulated with
  XLA_FLAGS=--xla_force_host_platform_device_count=N, one fresh worker process per N,
  the batch sharded over them by the loop's DataParallel (jit over a Mesh); weak scaling
  (a fixed per-device batch: CNN 32, GPT 8) and strong scaling (a fixed global batch:
  CNN 128, GPT 32). Simulated devices share this machine's cores, so this measures what
  partitioning costs or saves on the same cores (per-device programs, the gradient
  all-reduce, smaller per-device batches), not the speed-up of real devices: the
  reference here is flat examples/s, the dashed linear line is real devices' ideal.

Per point: steps/s and examples/s (the median over `--rounds` rounds; in every round each
point, of every worker, runs once, in turn, so a change of the machine's load falls on
all alike; a round of a point is whole steps, at least 2, lasting about `--round_s`, as
counted after its compilation). The step is the task's `train_step` compiled once with the
loop's shardings (parallel.DataParallel: the state as `state_sharding`, donated; the
batch split over the mesh), dispatched step after step on four constant batches gathered
beforehand; compiling and a warm-up are excluded. (The loop compiles several steps per
dispatch, parallel.compile_train_chunk; one step per dispatch measures the step itself, and
its FLOPs and memory are of the very program timed.) Also: FLOPs per step (XLA's count of
the step at the global batch before optimisation, as flops.py) and the achieved
GFLOP/s; and memory from XLA's analysis of the compiled train step, per device (`jit(step).lower(...).compile().memory_analysis()`: arguments = state +
batch, output, temporaries, generated code; "peak" = arguments + output - donated alias +
temporaries), which is deterministic, unlike the process's maximum RSS (reported per
worker only). The fp32 matmul rate (2048^2, jax) is measured once per round beside them.
The configs' conv lowering is the hand-set rule (PRACTICE_JAX_AUTOTUNE=0) unless
`--autotune`, so that no point's lowering depends on a timing taken under load.

Writes scaling.json (every point and round), scaling.md (the tables) and scaling.png into
`--out`. `--quick` (the smoke test): one batch per model on 1 and 2 devices, two rounds
of a few steps. The tests assert nothing about speed.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CONFIGS = {"cnn": os.path.join(REPO, "configs", "mnist.py"),
           "gpt": os.path.join(REPO, "configs", "shakespeare_gpt_cpu.py")}
# The model settings that are its width, by config.model.name.
WIDTH_KEYS = {"cnn": ("features", "dense"), "gpt": ("embed_dim",)}
VOCAB = 65                      # Tiny Shakespeare's characters
PROTOCOL = "@@scaling "         # prefix of the workers' answers on stdout
FULL = {"batches": {"cnn": (16, 32, 64, 128, 256, 512), "gpt": (4, 8, 16, 32, 64)},
        "widths": (0.5, 1.0, 2.0, 4.0), "devices": (1, 2, 4, 8),
        "weak": {"cnn": 32, "gpt": 8}, "strong": {"cnn": 128, "gpt": 32}}
QUICK = {"batches": {"cnn": (8,), "gpt": (4,)}, "widths": (), "devices": (1, 2),
         "weak": {}, "strong": {"cnn": 8, "gpt": 4}}


@dataclasses.dataclass(frozen=True)
class Point:
  model: str            # "cnn" | "gpt"
  batch: int            # global batch
  width: float          # multiplier of the config's width settings
  devices: int

  @property
  def key(self) -> str:
    return f"{self.model} batch={self.batch} width={self.width:g} devices={self.devices}"


def plan(models: list[str], sweeps: dict, base_batch: dict[str, int]
         ) -> tuple[list[Point], dict[str, list[tuple[str, Point]]]]:
  """The distinct points to measure and, per model, (sweep name, point) for every sweep
  that contains each (a point shared by two sweeps is measured once)."""
  points: list[Point] = []
  members: dict[str, list[tuple[str, Point]]] = {m: [] for m in models}

  def add(model: str, sweep: str, point: Point) -> None:
    if point not in points:
      points.append(point)
    members[model].append((sweep, point))

  for m in models:
    for b in sweeps["batches"][m]:
      add(m, "batch", Point(m, b, 1.0, 1))
    for w in sorted(set(sweeps["widths"]) | {1.0}):
      add(m, "width", Point(m, base_batch[m], w, 1))
    for n in sweeps["devices"]:
      if m in sweeps["weak"]:
        add(m, "weak", Point(m, sweeps["weak"][m] * n, 1.0, n))
      if m in sweeps["strong"]:
        add(m, "strong", Point(m, sweeps["strong"][m], 1.0, n))
  return points, members


def load_config(path: str):
  spec = importlib.util.spec_from_file_location("scaling_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def point_config(path: str, point: Point):
  """The config of `path` at `point`: its global batch, its width settings scaled."""
  config = load_config(path)
  config.batch_size = point.batch
  config.eval_batch_size = point.batch     # not used here; only has to split as the batch
  config.num_steps = max(config.num_steps, 1000)
  name = config.model.name
  if name not in WIDTH_KEYS:
    raise ValueError(f"{path}'s model {name!r} has no width rule here; bench/scaling.py "
                     f"scales {', '.join(sorted(WIDTH_KEYS))}.")
  for key in WIDTH_KEYS[name]:
    value = config.model[key]
    scale = lambda v: max(1, int(round(v * point.width)))   # noqa: E731
    config.model[key] = tuple(scale(v) for v in value) if isinstance(value, (tuple, list)) \
        else scale(value)
  return config


def check(args, points: list[Point]) -> str | None:
  """The first problem with the arguments or a point's config, in one sentence (before
  any worker starts or anything compiles)."""
  if args.rounds < 1 or args.round_s <= 0:
    return f"--rounds={args.rounds} must be at least 1 and --round_s={args.round_s} positive."
  unknown = [m for m in args.models if m not in CONFIGS]
  if unknown:
    return f"--models: unknown {unknown}; choose from {', '.join(CONFIGS)}."
  from practice_jax.errors import UserError
  from practice_jax.validation import validate
  for p in points:
    if p.batch % p.devices:
      return (f"{p.key}: the global batch {p.batch} does not split over {p.devices} "
              f"devices; choose batches divisible by every device count.")
    try:
      validate(point_config(args.config[p.model], p), p.devices)
    except (UserError, ValueError) as e:
      return f"{p.key}: {e}"
  return None


# -- the worker: one process per device count ----------------------------------------------

def _answer(obj) -> None:
  sys.stdout.write(PROTOCOL + json.dumps(obj) + "\n")
  sys.stdout.flush()


def _data(config, task_name: str, n: int, seed: int = 0):
  """A source of `n` random examples for the task (the speed does not depend on values)."""
  import numpy as np

  from practice_jax.data.catalogue import CATALOGUE
  from practice_jax.data.in_memory import ArraySource
  from practice_jax.data.text import Vocabulary, windows_source
  rng = np.random.default_rng(seed)
  if task_name == "language_model":
    chars = "".join(chr(33 + i) for i in range(VOCAB))
    vocab = Vocabulary(list(chars))
    tokens = rng.integers(0, VOCAB, n + config.data.block_size + 1).astype(np.int32)
    return windows_source(tokens, {}, vocab, config.data.block_size, 0, config.seed)
  spec = CATALOGUE[config.data.name]
  shape, classes = spec.image_shape, spec.num_classes
  split = {"image": rng.integers(0, 256, (n,) + tuple(shape), dtype=np.uint8),
           "label": rng.integers(0, classes, n).astype(np.int32)}
  info = {"num_classes": classes, "class_names": [str(i) for i in range(classes)],
          "image_shape": list(shape), "mean": [0.5] * shape[-1], "std": [0.25] * shape[-1]}
  return ArraySource(split, {}, info, config.seed)


class Runner:
  """One point: its train step compiled once, as the loop shards it, and `run(steps)` on
  constant batches; what XLA says that step costs (FLOPs, memory)."""

  def __init__(self, point: Point, config_path: str, distinct: int = 4):
    import jax

    from practice_jax import optim, tasks
    from practice_jax.parallel import DataParallel
    self.point, self.timings = point, {}
    start = time.perf_counter()
    config = point_config(config_path, point)
    parallel = DataParallel(mode="jit", mesh=tuple(config.parallel.mesh_shape),
                            fsdp_min_size=config.parallel.fsdp_min_size)
    source = _data(config, config.task.name, point.batch * distinct)
    task = tasks.get(config.task.name)(config, source, parallel)
    state = parallel.put_state(task.init_state(optim.Plan(total_steps=config.num_steps)))
    source.bind(parallel)
    self.params = task.num_parameters(state)
    # `distinct` different global batches, gathered once, each split over the devices.
    chunk = parallel.global_batches(source.batches(0, distinct, point.batch), point.batch)
    self.batches = [jax.device_put(jax.tree.map(lambda a, i=i: a[i], chunk),
                                   parallel.batch_sharded) for i in range(distinct)]
    self.timings["build"] = time.perf_counter() - start

    start = time.perf_counter()
    state_shardings = parallel.state_sharding(state)
    lowered = jax.jit(task.train_step, donate_argnums=0,
                      out_shardings=(state_shardings, parallel.replicated)
                      ).lower(state, self.batches[0])
    self.flops = _flops(lowered)
    self.step = lowered.compile()
    self.memory = _memory(self.step)
    self.timings["compile"] = time.perf_counter() - start
    self.state = state
    start = time.perf_counter()
    self.run(distinct)              # warm-up: allocation, first touches
    self.warmup_s = time.perf_counter() - start

  def run(self, steps: int) -> None:
    import jax
    metrics = None
    for i in range(steps):
      self.state, metrics = self.step(self.state, self.batches[i % len(self.batches)])
    jax.block_until_ready(metrics)


def _flops(lowered) -> float | None:
  """XLA's FLOP count of the whole (global-batch) step before optimisation, as flops.py
  counts it."""
  cost = lowered.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  value = (cost or {}).get("flops")
  return float(value) if value and value > 0 else None


def _memory(compiled) -> dict:
  """XLA's memory analysis of a compiled step, bytes per device: arguments (state and
  batch), output, donated alias, temporaries, generated code, and "peak" = arguments +
  output - alias + temporaries."""
  stats = compiled.memory_analysis()
  if stats is None:
    return {}
  out = {name: int(getattr(stats, f"{name}_size_in_bytes"))
         for name in ("argument", "output", "alias", "temp", "generated_code")}
  out["peak"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
  return out


def matmul_gflops(size: int = 2048, repeats: int = 3) -> float:
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  f(a).block_until_ready()
  start = time.perf_counter()
  for _ in range(repeats):
    out = f(a)
  out.block_until_ready()
  return 2 * size ** 3 * repeats / (time.perf_counter() - start) / 1e9


def worker(spec_path: str) -> None:
  """A worker process (one per device count): builds and compiles its points, answers
  "ready", then times every point once per "round" until "quit"."""
  with open(spec_path, encoding="utf-8") as f:
    spec = json.load(f)
  try:
    import jax
    if spec.get("cache"):     # the small programs (state, data) of similar points: once
      jax.config.update("jax_compilation_cache_dir", spec["cache"])
      jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
      jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    runners = []
    for p in spec["points"]:
      r = Runner(Point(**p), spec["configs"][p["model"]])
      start = time.perf_counter()
      r.run(len(r.batches))
      per_step = (time.perf_counter() - start) / len(r.batches)
      r.steps = int(min(spec["max_steps"], max(2, math.ceil(spec["round_s"] / per_step))))
      runners.append(r)
      print(f"devices={jax.device_count()} {r.point.key}: compiled in "
            f"{r.timings['compile']:.1f} s, {per_step * 1e3:.1f} ms/step",
            file=sys.stderr, flush=True)
    _answer({"ready": True, "devices": jax.device_count(),
             "points": [{"params": r.params, "flops": r.flops, "memory": r.memory,
                         "build_s": r.timings["build"], "compile_s": r.timings["compile"],
                         "steps_per_round": r.steps} for r in runners]})
    for line in sys.stdin:
      command = line.strip()
      if command == "round":
        seconds = []
        for r in runners:
          start = time.perf_counter()
          r.run(r.steps)
          seconds.append(time.perf_counter() - start)
        matmul = matmul_gflops() if spec["matmul"] else None
        _answer({"seconds": seconds, "matmul_gflops": matmul})
      elif command == "quit":
        _answer({"max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024})
        return
  except Exception:   # noqa: BLE001 - the parent says which point and why
    import traceback
    _answer({"error": traceback.format_exc()})


# -- the parent: plans, starts the workers, alternates the rounds, writes the results ----

class Worker:
  """A worker process for `devices` simulated devices, spoken to line by line."""

  def __init__(self, devices: int, points: list[Point], args, tmp: str):
    self.devices, self.points = devices, points
    spec_path = os.path.join(tmp, f"worker_{devices}.json")
    with open(spec_path, "w", encoding="utf-8") as f:
      json.dump({"points": [dataclasses.asdict(p) for p in points],
                 "configs": args.config,
                 "round_s": args.round_s, "max_steps": args.max_steps,
                 "matmul": devices == 1 and not args.quick,
                 "cache": os.path.join(tmp, "xla_cache") if len(points) > 1 else ""}, f)
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    env["JAX_PLATFORMS"] = "cpu"
    if not args.autotune:
      env["PRACTICE_JAX_AUTOTUNE"] = "0"
    self.log_path = os.path.join(tmp, f"worker_{devices}.log")
    self.log = open(self.log_path, "w", encoding="utf-8")
    self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker",
                                  spec_path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=self.log, text=True, env=env, cwd=REPO)

  def receive(self) -> dict:
    for line in self.proc.stdout:
      if line.startswith(PROTOCOL):
        answer = json.loads(line[len(PROTOCOL):])
        if "error" in answer:
          raise SystemExit(f"The worker for {self.devices} device(s) failed:\n"
                           f"{answer['error']}(its log: {self.log_path})")
        return answer
    self.proc.wait()
    with open(self.log_path, encoding="utf-8") as f:
      tail = f.read()[-3000:]
    raise SystemExit(f"The worker for {self.devices} device(s) exited "
                     f"({self.proc.returncode}):\n{tail}")

  def ask(self, command: str) -> dict:
    self.proc.stdin.write(command + "\n")
    self.proc.stdin.flush()
    return self.receive()

  def close(self) -> None:
    if self.proc.poll() is None:
      self.proc.kill()
      self.proc.wait()
    self.log.close()


def _load() -> list[float]:
  try:
    return [round(v, 2) for v in os.getloadavg()]
  except OSError:
    return []


def measure(args, points: list[Point], tmp: str) -> dict:
  by_devices: dict[int, list[Point]] = {}
  for p in points:
    by_devices.setdefault(p.devices, []).append(p)
  workers: list[Worker] = []
  info, seconds, matmul, load = {}, {p: [] for p in points}, [], [_load()]
  start = time.perf_counter()
  try:
    # All workers build and compile at once (the machine's cores share that work); the
    # timed rounds below run one worker at a time.
    for n in sorted(by_devices):
      workers.append(Worker(n, by_devices[n], args, tmp))
    for w in workers:
      n = w.devices
      ready = w.receive()
      for p, i in zip(w.points, ready["points"]):
        info[p] = i
      print(f"[{time.perf_counter() - start:5.0f} s] {n} device(s): {len(w.points)} points "
            f"compiled; load {_load()}", flush=True)
    for r in range(args.rounds):
      for w in workers:
        answer = w.ask("round")
        for p, s in zip(w.points, answer["seconds"]):
          seconds[p].append(s)
        if answer.get("matmul_gflops"):
          matmul.append(answer["matmul_gflops"])
      load.append(_load())
      print(f"[{time.perf_counter() - start:5.0f} s] round {r + 1}/{args.rounds}; load "
            f"{load[-1]}", flush=True)
    rss = {w.devices: w.ask("quit")["max_rss_bytes"] for w in workers}
  finally:
    for w in workers:
      w.close()
  results = []
  for p in points:
    steps = info[p]["steps_per_round"]
    rate = statistics.median(steps / s for s in seconds[p])
    flops = info[p]["flops"]
    results.append({**dataclasses.asdict(p), "per_device_batch": p.batch // p.devices,
                    **info[p], "round_seconds": seconds[p], "steps_per_s": rate,
                    "examples_per_s": rate * p.batch,
                    "gflops_per_s": rate * flops / 1e9 if flops else None})
  return {"points": results, "matmul_gflops": matmul, "load_average": load,
          "max_rss_bytes": rss, "wall_s": time.perf_counter() - start}


def _mib(x: float | None) -> str:
  return "" if x is None else f"{x / 2 ** 20:,.1f}"


def table(rows: list[dict], sweep: str) -> str:
  """A markdown table of one model's points of one sweep."""
  head = ("| devices | batch (per device) | width | params | GFLOP/step | steps/s | "
          "examples/s | GFLOP/s | peak MiB/device | temp MiB |")
  lines = [head, "| ---: " * 10 + "|"]
  for r in rows:
    m = r["memory"] or {}
    lines.append(
        f"| {r['devices']} | {r['batch']} ({r['per_device_batch']}) | {r['width']:g}x | "
        f"{r['params']:,} | {(r['flops'] or 0) / 1e9:.3f} | {r['steps_per_s']:.2f} | "
        f"{r['examples_per_s']:,.0f} | "
        f"{r['gflops_per_s'] or 0:.1f} | {_mib(m.get('peak'))} | {_mib(m.get('temp'))} |")
  return f"{sweep}:\n\n" + "\n".join(lines)


SWEEP_TITLES = {"batch": "batch (1 device, width 1x)",
                "width": "width (1 device, the config's batch)",
                "weak": "devices, weak scaling (fixed per-device batch)",
                "strong": "devices, strong scaling (fixed global batch)"}


def members_of(result: dict) -> dict[str, list[tuple[str, Point]]]:
  """The sweeps of a result read back from its JSON."""
  return {m: [(sweep, Point(**p)) for sweep, p in pairs]
          for m, pairs in result["sweeps"].items()}


def rows_of(result: dict, members: dict, model: str, sweep: str) -> list[dict]:
  by_point = {Point(r["model"], r["batch"], r["width"], r["devices"]): r
              for r in result["points"]}
  return [by_point[p] for s, p in members[model] if s == sweep]


def plot(result: dict, members: dict, path: str) -> None:
  """The PNG: rows batch / width / devices; throughput, memory and FLOPs in columns."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from matplotlib import ticker
  colours = {"cnn": "tab:blue", "gpt": "tab:orange"}
  names = {"cnn": "CNN (mnist.py)", "gpt": "GPT (shakespeare_gpt_cpu.py)"}
  fig, axes = plt.subplots(3, 3, figsize=(16, 13))
  models = list(members)

  def line(ax, xs, ys, model, style="-", label=None, marker="o"):
    ax.plot(xs, ys, style, color=colours[model], marker=marker, label=label)

  def ref(ax, xs, anchor_x, anchor_y, power, model, label=None, style=":"):
    ax.plot(xs, [anchor_y * (x / anchor_x) ** power for x in xs], style,
            color=colours[model], alpha=0.5, label=label)

  # Row 1: batch.
  for m in models:
    rows = rows_of(result, members, m, "batch")
    if not rows:
      continue
    b = [r["batch"] for r in rows]
    ex = [r["examples_per_s"] for r in rows]
    line(axes[0, 0], b, ex, m, label=names[m])
    ref(axes[0, 0], b, b[0], ex[0], 1, m, label=f"{m}: linear (fixed cost per step)")
    peak = [r["memory"].get("peak", 0) / 2 ** 20 for r in rows]
    temp = [r["memory"].get("temp", 0) / 2 ** 20 for r in rows]
    line(axes[0, 1], b, peak, m, label=f"{m}: peak")
    line(axes[0, 1], b, temp, m, "--", label=f"{m}: temporaries", marker="s")
    ref(axes[0, 1], b, b[-1], temp[-1], 1, m, label=f"{m}: linear")
    line(axes[0, 2], b, [r["gflops_per_s"] or 0 for r in rows], m, label=names[m])
  if result["matmul_gflops"]:
    axes[0, 2].axhline(statistics.median(result["matmul_gflops"]), color="grey", ls="--",
                       label="fp32 matmul 2048², jax (median)")
  for ax, title, ylabel in ((axes[0, 0], "throughput vs batch", "examples/s"),
                            (axes[0, 1], "memory per step vs batch (XLA)", "MiB"),
                            (axes[0, 2], "achieved rate vs batch", "GFLOP/s")):
    ax.set_xscale("log", base=2)
    ax.set_xlabel("global batch")
    if ax is not axes[0, 2]:
      ax.set_yscale("log")
    ax.set_title(title)
    ax.set_ylabel(ylabel)

  # Row 2: width.
  for m in models:
    rows = rows_of(result, members, m, "width")
    if not rows:
      continue
    w = [r["width"] for r in rows]
    one = next((i for i, r in enumerate(rows) if r["width"] == 1.0), 0)
    steps = [r["steps_per_s"] for r in rows]
    line(axes[1, 0], w, steps, m, label=f"{names[m]}, batch {rows[0]['batch']}")
    ref(axes[1, 0], w, w[one], steps[one], -2, m, label=f"{m}: 1/width²")
    args = [r["memory"].get("argument", 0) / 2 ** 20 for r in rows]
    peak = [r["memory"].get("peak", 0) / 2 ** 20 for r in rows]
    line(axes[1, 1], w, peak, m, label=f"{m}: peak")
    line(axes[1, 1], w, args, m, "--", label=f"{m}: arguments (state + batch)", marker="s")
    ref(axes[1, 1], w, w[-1], args[-1], 2, m, label=f"{m}: width²")
    fl = [(r["flops"] or 0) / 1e9 for r in rows]
    line(axes[1, 2], w, fl, m, label=names[m])
    ref(axes[1, 2], w, w[one], fl[one], 2, m, label=f"{m}: width²")
    ref(axes[1, 2], w, w[one], fl[one], 1, m, label=f"{m}: width")
  for ax, title, ylabel in ((axes[1, 0], "speed vs width", "steps/s"),
                            (axes[1, 1], "memory per step vs width (XLA)", "MiB"),
                            (axes[1, 2], "FLOPs per step vs width (XLA)", "GFLOP/step")):
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("width multiplier")
    ax.set_title(title)
    ax.set_ylabel(ylabel)

  # Row 3: devices.
  for col, sweep, key, ylabel in ((0, "weak", "examples_per_s", "examples/s"),
                                  (1, "strong", "steps_per_s", "steps/s")):
    ax = axes[2, col]
    for m in models:
      rows = rows_of(result, members, m, sweep)
      if not rows:
        continue
      n = [r["devices"] for r in rows]
      y = [r[key] for r in rows]
      per = (f"{rows[0]['per_device_batch']}/device" if sweep == "weak"
             else f"global {rows[0]['batch']}")
      line(ax, n, y, m, label=f"{names[m]}, {per}")
      ref(ax, n, n[0], y[0], 1, m, label=f"{m}: linear (N real devices)", style="--")
      ref(ax, n, n[0], y[0], 0, m, label=f"{m}: flat (same cores, no overhead)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("simulated CPU devices (sharing the machine's cores)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{sweep} scaling")
  ax = axes[2, 2]
  for m in models:
    for sweep, style in (("weak", "-"), ("strong", "--")):
      rows = rows_of(result, members, m, sweep)
      if rows:
        line(ax, [r["devices"] for r in rows],
             [r["memory"].get("peak", 0) / 2 ** 20 for r in rows], m, style,
             label=f"{m}: {sweep}")
  ax.set_xscale("log", base=2)
  ax.set_yscale("log")
  ax.set_xlabel("simulated CPU devices")
  ax.set_ylabel("MiB per device")
  ax.set_title("memory per device (XLA, peak)")
  plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")
  for ax in axes.flat:
    if not ax.has_data():
      ax.text(0.5, 0.5, "not measured in this run", ha="center", va="center",
              transform=ax.transAxes, color="grey")
      continue
    if ax.yaxis.get_scale() == "log":
      ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    for axis in (ax.xaxis, ax.yaxis):
      if axis.get_scale() == "log":
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(ticker.NullFormatter())
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
  load = result["load_average"]
  fig.suptitle(f"How cost grows: {result['machine']}, {result['cpus']} CPUs, "
               f"load average {load[0][0] if load and load[0] else '?'}..."
               f"{load[-1][0] if load and load[-1] else '?'} (medians of "
               f"{result['rounds']} alternating rounds)")
  fig.tight_layout(rect=(0, 0, 1, 0.97))
  fig.savefig(path, dpi=100)
  plt.close(fig)


def parse(argv: list[str] | None = None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="cnn,gpt")
  parser.add_argument("--cnn_config", default=CONFIGS["cnn"])
  parser.add_argument("--gpt_config", default=CONFIGS["gpt"])
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--round_s", type=float, default=0.3,
                      help="seconds each point runs per round (whole steps, at least 2)")
  parser.add_argument("--max_steps", type=int, default=200)
  parser.add_argument("--devices", default="",
                      help="comma-separated device counts (default 1,2,4,8)")
  parser.add_argument("--autotune", action="store_true",
                      help="let 'auto' conv lowerings measure (default: the hand-set rule)")
  parser.add_argument("--quick", action="store_true", help="tiny sweeps (the smoke test)")
  parser.add_argument("--out", default=os.path.join(HERE, "results"),
                      help="folder for scaling.json, scaling.png and scaling.md")
  parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  args.models = [m for m in args.models.split(",") if m]
  args.config = {"cnn": args.cnn_config, "gpt": args.gpt_config}
  if args.quick:
    args.rounds = min(args.rounds, 2)
    args.round_s = min(args.round_s, 0.05)
    args.max_steps = min(args.max_steps, 4)
  return args


def main(argv: list[str] | None = None) -> int:
  args = parse(argv)
  if args.worker:
    worker(args.worker)
    return 0
  sweeps = dict(QUICK if args.quick else FULL)
  try:
    if args.devices:
      sweeps["devices"] = tuple(int(n) for n in args.devices.split(","))
  except ValueError:
    print(f"--devices={args.devices!r} must be comma-separated whole numbers.", file=sys.stderr)
    return 2
  if any(n < 1 for n in sweeps["devices"]):
    print(f"--devices={args.devices!r}: every device count must be at least 1.",
          file=sys.stderr)
    return 2
  unknown = [m for m in args.models if m not in CONFIGS]
  if unknown or not args.models:
    print(f"--models={','.join(args.models)!r}: choose from {', '.join(CONFIGS)}.",
          file=sys.stderr)
    return 2
  base_batch = {m: load_config(args.config[m]).batch_size for m in args.models}
  if args.quick:
    base_batch = {m: sweeps["batches"][m][0] for m in args.models}
  points, members = plan(args.models, sweeps, base_batch)
  problem = check(args, points)
  if problem:
    print(problem, file=sys.stderr)
    return 2
  print(f"{len(points)} points over {len(set(p.devices for p in points))} worker(s); "
        f"load average {_load()}", flush=True)
  with tempfile.TemporaryDirectory(prefix="scaling_") as tmp:
    result = measure(args, points, tmp)
  import jax
  from practice_jax.autotune import cpu_model
  result.update({"machine": cpu_model(),
                 "cpus": os.cpu_count(), "jax": jax.__version__, "rounds": args.rounds,
                 "round_s": args.round_s, "quick": args.quick, "autotune": args.autotune,
                 "configs": {m: os.path.relpath(args.config[m], REPO) for m in args.models},
                 "sweeps": {m: [[s, dataclasses.asdict(p)] for s, p in members[m]]
                            for m in args.models},
                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "scaling.json"), "w", encoding="utf-8") as f:
    json.dump(result, f, indent=1)
  text = []
  for m in args.models:
    for sweep in ("batch", "width", "weak", "strong"):
      rows = rows_of(result, members, m, sweep)
      if rows:
        text.append(table(rows, f"{m}, {SWEEP_TITLES[sweep]}"))
  matmul = (f"; fp32 matmul 2048² (jax): {statistics.median(result['matmul_gflops']):.0f} "
            f"GFLOP/s (median)" if result["matmul_gflops"] else "")
  loads = [v[0] for v in result["load_average"] if v]
  text.append(f"Load average (1 min) from {min(loads):.1f} to {max(loads):.1f} during the "
              f"run{matmul}; wall {result['wall_s']:.0f} s.")
  with open(os.path.join(args.out, "scaling.md"), "w", encoding="utf-8") as f:
    f.write("\n\n".join(text) + "\n")
  plot(result, members, os.path.join(args.out, "scaling.png"))
  print("\n\n".join(text))
  print(f"wrote {os.path.join(args.out, 'scaling.json')}, scaling.md and scaling.png")
  return 0


if __name__ == "__main__":
  sys.exit(main())
