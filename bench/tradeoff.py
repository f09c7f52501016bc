"""The compression trade-off table of trained classifiers, gathered from what their
commands already wrote: one markdown table (model, test accuracy, top-1 agreement with
its float model, parameters, parameter bytes, batch-1 latency) and a PNG of test accuracy
against parameter bytes.

    python bench/tradeoff.py --out=/tmp/tradeoff runs/mnist "QAT int4=runs/mnist_qat_int4" \\
        "student 784-128-10=runs/mnist_distillation" ...

Each argument is a workdir, optionally labelled (``LABEL=WORKDIR``; default: the
workdir's name). From each it reads:

- ``run.json`` (python -m practice_jax.main): the run's own test accuracy (for a
  quantization-aware run, its fake-quantized model's) and its parameter count;
- ``quantize.json`` (python -m practice_jax.compress quantize): one row per method;
- ``prune.json`` (python -m practice_jax.compress prune): one row per pruned model (and
  its fine-tuned twin), with its nonzero parameters (their bytes are not computed: a
  sparse format's size depends on the format).

Writes ``tradeoff.md`` and ``tradeoff.png`` into ``--out`` and prints the table. Nothing
is measured here: every number comes from those files, measured by the commands that
wrote them (batch-1 latencies from different commands are comparable only on an idle
machine).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _load(path: str) -> dict | None:
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def rows_of(label: str, workdir: str) -> list[dict]:
  """The table's rows of one workdir (see the module docstring)."""
  run = _load(os.path.join(workdir, "run.json"))
  quantized = _load(os.path.join(workdir, "quantize.json"))
  pruned = _load(os.path.join(workdir, "prune.json"))
  if run is None and quantized is None and pruned is None:
    raise SystemExit(f"error: {workdir} has none of run.json, quantize.json, prune.json.")
  n = (run or {}).get("num_parameters") or (pruned or {}).get("dense", {}).get("parameters")
  rows = []
  task = (run or {}).get("config", {}).get("task", {})
  if run is not None and task.get("name") == "quantization_aware":
    rows.append({"model": f"{label}: its own evaluation ({task.get('mode')} fake-quantized)",
                 "accuracy": run["final"]["test"]["accuracy"], "parameters": n})
  elif run is not None and quantized is None:
    rows.append({"model": f"{label}: float32", "accuracy": run["final"]["test"]["accuracy"],
                 "parameters": n, "bytes": 4 * n if n else None})
  for r in (quantized or {}).get("rows", []):
    rows.append({"model": f"{label}: {r['method']}", "accuracy": r["accuracy"],
                 "agreement": r["agreement"], "parameters": n, "bytes": r["size_bytes"],
                 "latency_ms": r.get("latency_ms")})
  if pruned is not None:
    tuned = pruned.get("finetune", {}).get("steps")
    for r in pruned["pruned"]:
      name = f"{label}: pruned {r['scope']} {r['sparsity']:.0%}"
      rows.append({"model": name, "accuracy": r["accuracy"],
                   "parameters": r["nonzero_parameters"]})
      if "finetuned_accuracy" in r:
        rows.append({"model": f"{name}, fine-tuned {tuned} steps",
                     "accuracy": r["finetuned_accuracy"],
                     "parameters": r["nonzero_parameters"]})
  return rows


def markdown(rows: list[dict]) -> str:
  def cell(r, key, fmt):
    return fmt(r[key]) if r.get(key) is not None else "—"
  lines = ["| model | test accuracy | top-1 agreement with its float model | parameters "
           "(nonzero) | parameter bytes | batch-1 ms |",
           "| --- | --- | --- | --- | --- | --- |"]
  for r in rows:
    lines.append("| " + " | ".join([
        r["model"], cell(r, "accuracy", lambda v: f"{v:.2%}"),
        cell(r, "agreement", lambda v: f"{v:.2%}"),
        cell(r, "parameters", lambda v: f"{v:,}"), cell(r, "bytes", lambda v: f"{v:,}"),
        cell(r, "latency_ms", lambda v: f"{v:.2f}")]) + " |")
  return "\n".join(lines)


def plot(rows: list[dict], path: str, title: str) -> None:
  from practice_jax.reporting.plots import plt
  fig, ax = plt.subplots(figsize=(7.5, 4.8))
  groups: dict[str, list[dict]] = {}
  for r in rows:
    if r.get("bytes"):
      groups.setdefault(r["model"].split(":")[0], []).append(r)
  markers = "osD^v<>ph*"
  for i, (group, members) in enumerate(groups.items()):
    ax.scatter([r["bytes"] for r in members], [r["accuracy"] for r in members],
               marker=markers[i % len(markers)], label=group, s=36)
    for r in members:
      ax.annotate(r["model"].split(": ", 1)[1], (r["bytes"], r["accuracy"]), fontsize=6,
                  xytext=(3, 2), textcoords="offset points")
  ax.set_xscale("log")
  ax.set_xlabel("parameter bytes (log scale)")
  ax.set_ylabel("test accuracy")
  ax.yaxis.set_major_formatter(lambda v, _: f"{v:.2%}")
  ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("workdirs", nargs="+", help="WORKDIR or LABEL=WORKDIR")
  parser.add_argument("--out", required=True, help="folder for tradeoff.md and .png")
  parser.add_argument("--title", default="Compression trade-off (test split)")
  args = parser.parse_args(argv)
  rows = []
  for spec in args.workdirs:
    label, _, workdir = spec.rpartition("=")
    rows += rows_of(label or os.path.basename(os.path.normpath(workdir)), workdir)
  from practice_jax.reporting.artifacts import Artifacts
  table = markdown(rows)
  out = Artifacts(args.out, True, True)
  out.text("tradeoff.md", table + "\n")
  out.figure("tradeoff.png", lambda path: plot(rows, path, args.title))
  print(table)
  print(f"written: {args.out}/tradeoff.md, {args.out}/tradeoff.png")
  return 0


if __name__ == "__main__":
  sys.exit(main())
