"""What the input pipeline costs: train steps fed by the real pipeline (batches gathered
from the device-resident dataset by a per-epoch permutation, as in training) against the
same compiled steps fed one constant, pre-gathered chunk of batches.

    python bench/input_overhead.py [--configs mnist,mnist_mlp] [--chunks 20] [--repeats 5]

Each config's model, optimizer, batch size and steps_per_dispatch are used on real MNIST
(TFDS_DATA_DIR must hold it prepared). The two feeds alternate, `--repeats` rounds of
`--chunks` dispatches each after a warm-up; medians are reported with the overhead
(real / constant - 1). Not part of the tests.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import time

import jax


def _config(name: str):
  spec = importlib.util.spec_from_file_location(name, os.path.join("configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def measure(name: str, chunks: int, repeats: int) -> dict:
  from practice_jax import train

  config = _config(name)
  exp = train.build(config)
  par, task, source, k = exp.parallel, exp.task, exp.source, config.steps_per_dispatch
  state = [par.put_state(task.init_state(exp.plan))]
  source.bind(par)
  chunk = par.compile_train_chunk(task.train_step, config.batch_size,
                                  unroll=task.unroll_on_cpu)
  constant = par.global_batches(source.batches(0, k, exp.local_batch), config.batch_size)
  last_start = max(exp.plan.steps_per_epoch // k - 1, 1)

  def real(i):
    batches = source.batches((i % last_start) * k, k, exp.local_batch)
    state[0], sums, _ = chunk(state[0], batches, k)
    return sums

  def const(i):
    state[0], sums, _ = chunk.train_on(state[0], constant, k)
    return sums

  for feed in (real, const):        # compile both
    jax.block_until_ready(feed(0))
  times = {"real": [], "constant": []}
  for _ in range(repeats):
    for label, feed in (("real", real), ("constant", const)):
      start = time.perf_counter()
      for i in range(chunks):
        sums = feed(i)
      jax.block_until_ready(sums)
      times[label].append(chunks * k / (time.perf_counter() - start))
  real_sps, const_sps = (statistics.median(times[x]) for x in ("real", "constant"))
  return {"config": name, "steps_per_dispatch": k, "batch_size": config.batch_size,
          "real_steps_per_s": round(real_sps, 2), "constant_steps_per_s": round(const_sps, 2),
          "overhead": round(const_sps / real_sps - 1, 4), "runs": times}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", default="mnist,mnist_mlp")
  parser.add_argument("--chunks", type=int, default=20)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--out", default="bench/results/input_overhead.json")
  args = parser.parse_args()
  results = [measure(name, args.chunks, args.repeats) for name in args.configs.split(",")]
  print(f"{'config':<14} {'steps/dispatch':>14} {'real steps/s':>13} {'constant steps/s':>17}"
        f" {'overhead':>9}")
  for r in results:
    print(f"{r['config']:<14} {r['steps_per_dispatch']:>14} {r['real_steps_per_s']:>13}"
          f" {r['constant_steps_per_s']:>17} {r['overhead']:>9.1%}")
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump({"results": results, "device": str(jax.devices()[0]),
               "jax": jax.__version__}, f, indent=2)


if __name__ == "__main__":
  main()
