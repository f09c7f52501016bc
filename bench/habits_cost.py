"""What the big-model habits cost: train steps/s of one config with variants of it
(bfloat16 compute, gradient accumulation, a moving average of the weights, ...), each a
fresh `python -m practice_jax.main` process, run in alternation (round-robin) so that a
change in the machine's load falls on every variant alike. Reports the median over the
rounds of run.json's speed.train_steps_per_s (chunks after the first, so compiling is
excluded) and examples/s (steps/s x batch: the fair measure when a variant accumulates
smaller batches), each variant's examples/s ratio to the first one, its final test metrics and FLOPs per
step.

    TFDS_DATA_DIR=... python bench/habits_cost.py --config configs/mnist.py --steps 300 \\
        --rounds 3 --variant fp32= --variant bf16=model.dtype=bfloat16 \\
        --variant accumulate4=batch_size=32,optimizer.accumulate_steps=4 \\
        --variant ema=optimizer.ema_decay=0.999
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def run(config: str, steps: int, overrides: list[str], workdir: str) -> dict:
  cmd = [sys.executable, "-m", "practice_jax.main", f"--config={config}",
         f"--workdir={workdir}", f"--config.num_steps={steps}", "--config.plots=False",
         "--config.eval_every_steps=0"] + [f"--config.{o}" for o in overrides]
  start = time.perf_counter()
  proc = subprocess.run(cmd, capture_output=True, text=True)
  wall = time.perf_counter() - start
  if proc.returncode != 0:
    raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
  with open(os.path.join(workdir, "run.json"), encoding="utf-8") as f:
    record = json.load(f)
  rate = record["speed"]["train_steps_per_s"]
  return {"steps_per_s": rate, "examples_per_s": rate * record["config"]["batch_size"],
          "wall_s": wall,
          "flops_per_step": record["speed"]["flops_per_step"],
          "test": record["final"].get("test", {})}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/mnist.py")
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--variant", action="append", default=[],
                      help="NAME=key=value,key=value (config overrides; empty = as is)")
  parser.add_argument("--json", default="")
  args = parser.parse_args()
  variants = {}
  for v in args.variant or ["as_is="]:
    name, _, overrides = v.partition("=")
    variants[name] = [o for o in overrides.split(",") if o]
  results = {name: [] for name in variants}
  with tempfile.TemporaryDirectory(prefix="habits_cost_") as tmp:
    for r in range(args.rounds):
      for name, overrides in variants.items():
        out = run(args.config, args.steps, overrides, os.path.join(tmp, f"{name}_{r}"))
        results[name].append(out)
        print(f"round {r} {name}: {out['steps_per_s']:.2f} steps/s, test {out['test']}",
              flush=True)
  base = statistics.median(o["examples_per_s"] for o in next(iter(results.values())))
  print(f"\n{'variant':<14}{'steps/s':>9}{'examples/s':>12}{'ratio':>8}{'GFLOPs/step':>13}"
        f"  test (last round)")
  summary = {}
  for name, outs in results.items():
    rate = statistics.median(o["steps_per_s"] for o in outs)
    examples = statistics.median(o["examples_per_s"] for o in outs)
    flops = outs[-1]["flops_per_step"]
    summary[name] = {"steps_per_s": rate, "examples_per_s": examples,
                     "ratio": examples / base, "runs": outs, "overrides": variants[name]}
    test = ", ".join(f"{k} {v:.4f}" for k, v in outs[-1]["test"].items())
    print(f"{name:<14}{rate:9.2f}{examples:12.0f}{examples / base:8.2f}"
          f"{(flops or 0) / 1e9:13.3f}  {test}")
  try:
    load = os.getloadavg()[0]
  except OSError:
    load = float("nan")
  print(f"(medians of {args.rounds} alternating rounds; load average now {load:.1f})")
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(summary, f, indent=1)


if __name__ == "__main__":
  main()
