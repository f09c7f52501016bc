"""Train-step speed of the PyTorch-examples MNIST CNN in practice_jax, TensorFlow/Keras and
PyTorch, measured side by side, plus the machine's fp32 matmul peak.

    python bench/step_speed.py [--batch 128] [--steps 20] [--repeats 3]
                               [--conv_impl xla,eigen,im2col] [--dtype float32,bfloat16]
                               [--matmul_dtype float32,bfloat16] [--model mnist]

Same net (conv32 3x3 - conv64 3x3 - maxpool 2 - dense128 - dense10, no dropout), AdamW,
batch 128 of random 28x28x1 inputs; practice_jax once per `--conv_impl` (the model's
conv/pool lowering, practice_jax/models/conv.py). Frameworks run in alternation,
`--repeats` rounds of `--steps` steps each after a warm-up, and the medians are reported
with ratios to the first practice_jax row measured in the same run; `--conv_impl auto-hand` is
"auto" with measuring off (PRACTICE_JAX_AUTOTUNE=0: the hand-set rule of models/conv.py);
each `--dtype` (config.model.dtype) and each `--matmul_dtype` (config.model.matmul_dtype:
bfloat16 runs the Dense layers' matmuls, and on a CPU with AMX the convolutions, in
bfloat16 with float32 accumulation; models/precision.py) runs every `--conv_impl` again; and
`--model mnist` runs configs/mnist.py's CNN instead (practice_jax only); "% of peak" counts
the FLOPs XLA reports for the first row's step (9.5 GFLOP) against the float32 matmul peak
(with a bfloat16 `--matmul_dtype` row, the bfloat16 matmul peak is measured and printed
too). Frameworks that are not installed are skipped (PyTorch is a benchmark-only extra:
`pip install torch==2.13.0`). Not part of the tests.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import time

import numpy as np


def practice_jax_runner(batch: int, conv_impl: str = "xla", model: str = "pytorch_examples",
                        dtype: str = "float32", matmul_dtype: str = "float32"):
  import jax

  from practice_jax import optim
  from practice_jax.config_base import base_config, model_config
  from practice_jax.data.in_memory import ArraySource
  from practice_jax.parallel import DataParallel
  from practice_jax.tasks.classification import ClassificationTask

  rng = np.random.default_rng(0)
  n = batch * 8
  split = {"image": rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
           "label": rng.integers(0, 10, n).astype(np.int32)}
  info = {"num_classes": 10, "class_names": [str(i) for i in range(10)],
          "image_shape": [28, 28, 1], "mean": [0.13], "std": [0.31]}
  config = base_config()
  config.model = model_config("cnn", features=(32, 64), pools=("none", "max"),
                              padding="VALID", dense=(128,), conv_impl=conv_impl)
  if model == "mnist":                       # configs/mnist.py's model
    import importlib.util
    spec = importlib.util.spec_from_file_location("mnist_config", os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "configs", "mnist.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config.model = module.get_config().model
    config.model.conv_impl = conv_impl
  config.model.dtype = dtype
  config.model.matmul_dtype = matmul_dtype
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 1e-3
  config.schedule.name = "constant"
  parallel = DataParallel()
  source = ArraySource(split, {}, info, config.seed)
  task = ClassificationTask(config, source, parallel)
  state = [parallel.put_state(task.init_state(optim.Plan(total_steps=1)))]
  source.bind(parallel)
  chunk = parallel.compile_train_chunk(task.train_step, batch, unroll=task.unroll_on_cpu)
  # The same pre-gathered global batches every time (as the other frameworks' constant
  # inputs): only the train steps are timed.
  chunks = {}

  def batches(k: int):
    if k not in chunks:
      chunks[k] = parallel.global_batches(source.batches(0, k, batch), batch)
    return chunks[k]

  def run(steps: int) -> None:
    done = 0
    while done < steps:
      k = min(8, steps - done)
      state[0], sums, _ = chunk.train_on(state[0], batches(k), k)
      done += k
    jax.block_until_ready(sums)

  one_step = jax.tree.map(lambda a: a[0], batches(1))
  lowered = jax.jit(task.train_step).lower(state[0], one_step)
  cost = lowered.compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return run, (cost or {}).get("flops")


def keras_runner(batch: int):
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")
  model = tf.keras.Sequential([
      tf.keras.Input((28, 28, 1)),
      tf.keras.layers.Conv2D(32, 3, activation="relu"),
      tf.keras.layers.Conv2D(64, 3, activation="relu"),
      tf.keras.layers.MaxPooling2D(2), tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(128, activation="relu"), tf.keras.layers.Dense(10)])
  opt = tf.keras.optimizers.AdamW(1e-3)
  loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  x = tf.random.uniform((batch, 28, 28, 1))
  y = tf.random.uniform((batch,), maxval=10, dtype=tf.int32)

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      loss = loss_fn(y, model(x, training=True))
    opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                            model.trainable_variables))
    return loss

  def run(steps: int) -> None:
    for _ in range(steps):
      loss = step()
    float(loss)
  return run, None


def torch_runner(batch: int):
  import torch
  torch.set_num_threads(os.cpu_count() or 1)
  model = torch.nn.Sequential(
      torch.nn.Conv2d(1, 32, 3), torch.nn.ReLU(), torch.nn.Conv2d(32, 64, 3),
      torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
      torch.nn.Linear(9216, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
  opt = torch.optim.AdamW(model.parameters(), 1e-3)
  x = torch.rand(batch, 1, 28, 28)
  y = torch.randint(0, 10, (batch,))

  def run(steps: int) -> None:
    for _ in range(steps):
      opt.zero_grad(set_to_none=True)
      loss = torch.nn.functional.cross_entropy(model(x), y)
      loss.backward()
      opt.step()
    float(loss.detach())
  return run, None


def matmul_peak_gflops(size: int = 2048, repeats: int = 10, dtype: str = "float32") -> float:
  """A size^3 matmul's rate in `dtype` (bfloat16: accumulated in float32, AMX where the
  CPU has it)."""
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32).astype(dtype)
  f = jax.jit(lambda a: jnp.matmul(a, a, preferred_element_type=jnp.float32))
  f(a).block_until_ready()
  start = time.perf_counter()
  for _ in range(repeats):
    out = f(a)
  out.block_until_ready()
  return 2 * size ** 3 * repeats / (time.perf_counter() - start) / 1e9


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--conv_impl", default="xla,eigen,im2col",
                      help="comma-separated conv_impl values to run practice_jax with")
  parser.add_argument("--dtype", default="float32",
                      help="comma-separated config.model.dtype values (float32, bfloat16) to "
                      "run practice_jax with, each with every --conv_impl")
  parser.add_argument("--matmul_dtype", default="float32",
                      help="comma-separated config.model.matmul_dtype values (float32, "
                      "bfloat16) to run practice_jax with, each with every --dtype")
  parser.add_argument("--model", default="pytorch_examples", choices=("pytorch_examples", "mnist"))
  parser.add_argument("--out", default="bench/results/step_speed.json")
  args = parser.parse_args()

  impls, dtypes = args.conv_impl.split(","), args.dtype.split(",")
  rows = [(impl, dtype, mm) for mm in args.matmul_dtype.split(",") for dtype in dtypes
          for impl in impls]
  makers = [(f"practice_jax[{impl}{'' if dtype == 'float32' else ',' + dtype}"
             f"{'' if mm == 'float32' else ',mm-' + mm}]" if len(rows) > 1 else "practice_jax",
             functools.partial(practice_jax_runner, conv_impl=impl.split("-")[0],
                               model=args.model, dtype=dtype, matmul_dtype=mm))
            for impl, dtype, mm in rows]
  peers = [("keras", keras_runner), ("pytorch", torch_runner)]
  runners, flops, setup_s = {}, None, {}
  autotune_env = os.environ.get("PRACTICE_JAX_AUTOTUNE")
  for name, make in makers + (peers if args.model == "pytorch_examples" else []):
    if "auto-hand" in name:                  # the hand-set rule: measuring off while traced
      os.environ["PRACTICE_JAX_AUTOTUNE"] = "0"
    elif autotune_env is None:
      os.environ.pop("PRACTICE_JAX_AUTOTUNE", None)
    else:
      os.environ["PRACTICE_JAX_AUTOTUNE"] = autotune_env
    start = time.perf_counter()
    try:
      run, f = make(args.batch)
    except ImportError as e:
      print(f"skipping {name}: {e}")
      continue
    run(args.steps)                          # warm-up: compile every chunk length, allocate
    setup_s[name] = time.perf_counter() - start
    runners[name] = run
    flops = flops or f
  rates = {name: [] for name in runners}
  peaks, bf16_peaks = [], []
  bfloat16 = any(mm == "bfloat16" for _, _, mm in rows)
  for _ in range(args.repeats):
    peaks.append(matmul_peak_gflops())
    if bfloat16:
      bf16_peaks.append(matmul_peak_gflops(dtype="bfloat16"))
    for name, run in runners.items():
      start = time.perf_counter()
      run(args.steps)
      rates[name].append(args.steps / (time.perf_counter() - start))
  peak = statistics.median(peaks)
  first = next(iter(rates))                  # ratios are to the first practice_jax row
  base = statistics.median(rates[first])
  result = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "batch": args.batch, "flops_per_step": flops, "matmul_peak_gflops": peak,
            "bf16_matmul_peak_gflops": statistics.median(bf16_peaks) if bf16_peaks else None,
            "steps_per_s": {k: statistics.median(v) for k, v in rates.items()},
            "all_runs": rates, "setup_s": setup_s, "load_average": os.getloadavg()}
  print(f"fp32 matmul peak (2048^2, jax): {peak:.0f} GFLOP/s; train step: "
        f"{(flops or 0) / 1e9:.2f} GFLOP" + (f"; bfloat16 matmul peak (float32 accumulation): "
                                             f"{statistics.median(bf16_peaks):.0f} GFLOP/s"
                                             if bf16_peaks else ""))
  print(f"{'framework':<22}{'steps/s':>10}{'examples/s':>12}{'x ' + first:>24}"
        f"{'% of peak':>11}")
  for name, values in rates.items():
    r = statistics.median(values)
    frac = f"{100 * r * flops / 1e9 / peak:10.1f}%" if flops else ""
    print(f"{name:<22}{r:10.2f}{r * args.batch:12.0f}{r / base:24.2f}{frac}"
          f"   (setup + warm-up {setup_s[name]:.1f} s)")
  print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)


if __name__ == "__main__":
  main()
