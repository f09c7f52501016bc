"""Wall time from process start to a validation target, for any practice_jax config.

    python bench/time_to_target.py --config configs/shakespeare_gpt_cpu.py \
        --metric loss --target 1.88 [--repeats 3] [--config.KEY=VALUE ...]

Each repeat launches ``python -m practice_jax.main`` in a fresh workdir with the
persistent compilation cache off, and reads the workdir's metrics.jsonl, whose records
carry the unix time they were written: the time to target is from just before the launch
to the first validation record at or past the target (below it for loss, above it for
accuracy). The time to process exit (final test evaluation and report included) is
reported too. Medians over the repeats. Not part of the tests.
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


def run_once(config: str, overrides: list[str], metric: str, target: float,
             logdir: str, index: int) -> dict:
  workdir = os.path.join(logdir, f"run{index}")
  log = os.path.join(logdir, f"run{index}.log")
  launch = time.time()
  with open(log, "w", encoding="utf-8") as f:
    code = subprocess.call([sys.executable, "-m", "practice_jax.main", f"--config={config}",
                            f"--workdir={workdir}", "--compilation_cache=", *overrides],
                           stdout=f, stderr=subprocess.STDOUT)
  exit_s = time.time() - launch
  if code != 0:
    raise SystemExit(f"run {index} failed with exit status {code}; log: {log}")
  better = (lambda v: v <= target) if metric == "loss" else (lambda v: v >= target)
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    records = [json.loads(line) for line in f if line.strip()]
  hits = [r for r in records if r["split"] == "validation" and better(r[metric])]
  validation = [r for r in records if r["split"] == "validation"]
  return {"exit_s": round(exit_s, 2),
          "to_target_s": round(hits[0]["time"] - launch, 2) if hits else None,
          "step": hits[0]["step"] if hits else None,
          f"final_validation_{metric}": validation[-1][metric] if validation else None}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", required=True)
  parser.add_argument("--metric", default="loss", choices=("loss", "accuracy"))
  parser.add_argument("--target", type=float, required=True)
  parser.add_argument("--repeats", type=int, default=3)
  args, overrides = parser.parse_known_args()
  logdir = tempfile.mkdtemp(prefix="time_to_target_")
  runs = []
  for i in range(args.repeats):
    runs.append(run_once(args.config, overrides, args.metric, args.target, logdir, i))
    print(json.dumps(runs[-1]), flush=True)
  reached = [r["to_target_s"] for r in runs if r["to_target_s"] is not None]
  print(f"{args.config}: validation {args.metric} {'<=' if args.metric == 'loss' else '>='} "
        f"{args.target} reached in {len(reached)}/{len(runs)} runs; median time to target "
        f"{statistics.median(reached) if reached else float('nan'):.1f} s, median time to exit "
        f"{statistics.median(r['exit_s'] for r in runs):.1f} s (logs in {logdir})")


if __name__ == "__main__":
  main()
