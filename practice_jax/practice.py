"""Deliberate practice: every attempt recorded, compared with the last, given feedback.

    python -m practice_jax.practice list [EXPERIMENT]      attempts, best first, with notes
    python -m practice_jax.practice compare RUN RUN [...]  config and metric differences,
                                                           learning curves overlaid (PNG)
    python -m practice_jax.practice history EXPERIMENT     personal best against attempts
                                                           and practice time (PNG)
    python -m practice_jax.practice feedback RUN           a diagnosis from the curves, with
                                                           what to try next
    python -m practice_jax.practice import WORKDIR [...]   record runs trained before
    python -m practice_jax.practice note RUN "TEXT"        (re)write an attempt's note
    python -m practice_jax.practice report [EXPERIMENT]    the ledger as one static HTML
                                                           page (--out=FILE.html)

RUN is a ledger id (as `list` shows it, with or without '#') or a workdir. Training
records each run by itself (python -m practice_jax.main ... --note "what I try"); the
ledger is runs/ledger.sqlite unless --ledger=PATH says otherwise (give the same path to
main.py and here). PNGs go beside the ledger, in practice/, unless --out says otherwise;
`report` writes practice/report.html there unless --out names the HTML file.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import sys
from typing import Any

from practice_jax import ledger as ledger_lib
from practice_jax.ledger import Ledger, Run

DEFAULT_LEDGER = os.path.join("runs", ledger_lib.FILE_NAME)
# A change between two attempts smaller than this is noise (seed-to-seed spread of the
# MNIST configs is about 0.1 percentage point): for fractions shown as percentages, in
# absolute terms; for other metrics, relative to the value.
NOISE_FRACTION, NOISE_RELATIVE = 0.001, 0.005


class PracticeError(Exception):
  """One sentence for the user."""


# ------------------------------------------------------------------------ formatting

def fmt(run: Run, key: str, value: float | None) -> str:
  if value is None:
    return "-"
  if not math.isfinite(value):
    return str(value)
  return f"{100 * value:.2f}%" if run.percent(key) else f"{value:.4g}"


def fmt_delta(run: Run, key: str, delta: float) -> str:
  return (f"{100 * delta:+.2f} pt" if run.percent(key) else f"{delta:+.4g}")


def fmt_time(seconds: float | None) -> str:
  if seconds is None:
    return "-"
  return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def fmt_value(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:g}"
  if isinstance(value, list):
    return "(" + ", ".join(fmt_value(v) for v in value) + ")"
  return "-" if value is None else str(value)


def table(rows: list[list[str]], header: list[str]) -> str:
  widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
  lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip()]
  lines.append("  ".join("-" * w for w in widths))
  lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
  return "\n".join(lines)


def target_text(run: Run) -> str:
  if not run.target:
    return "-"
  met = run.target_met
  if met is None:
    return "?"
  return (f"pass {fmt_time(run.target_time_s)}" if met and run.target_time_s is not None
          else "pass" if met else "FAIL")


def changes(run: Run, limit: int = 4) -> str:
  """The run's config keys that differ from its config file, shortest form."""
  items = [f"{k.rpartition('.')[2]}={fmt_value(v[1])}"
           for k, v in run.config_diff.items() if k not in _WHERE_KEYS]
  return " ".join(items[:limit]) + (f" +{len(items) - limit}" if len(items) > limit else "")


# Keys that say where things are, not what is trained: not differences worth showing.
_WHERE_KEYS = ("data.data_dir", "data.manual_dir")


# ---------------------------------------------------------------------------- ranking

def better(run: Run, a: float | None, b: float | None) -> bool:
  """Whether the monitored value `a` beats `b`."""
  if a is None or not math.isfinite(a):
    return False
  if b is None or not math.isfinite(b):
    return True
  return a > b if run.higher_is_better() else a < b


def ranked(runs: list[Run]) -> list[Run]:
  """Best first by the final monitored metric's direction; diverged runs last."""
  def key(run: Run):
    value = run.final_value()
    if run.status != "finished" or value is None or not math.isfinite(value):
      return (1, 0.0)
    return (0, -value if run.higher_is_better() else value)
  return sorted(runs, key=key)


def noise(run: Run, key: str, value: float) -> float:
  return NOISE_FRACTION if run.percent(key) else NOISE_RELATIVE * max(abs(value), 1e-12)


# ---------------------------------------------------------------------- resolving RUN

def resolve(spec: str, ledger: Ledger | None) -> Run:
  """A ledger id ('12' or '#12') or a workdir (its latest recorded attempt, else read
  from its files)."""
  text = spec.lstrip("#")
  if text.isdigit() and not os.path.isdir(spec):
    run = ledger.get(int(text)) if ledger else None
    if run is None:
      where = ledger.path if ledger else "the ledger"
      raise PracticeError(f"No run #{text} in {where}; `python -m practice_jax.practice "
                          f"list` shows the recorded ids.")
    return run
  if os.path.isdir(spec):
    run = ledger.latest_in(spec) if ledger else None
    if run is not None:
      return run
    try:
      return ledger_lib.read_workdir(spec)
    except ValueError as e:
      raise PracticeError(str(e)) from None
  raise PracticeError(f"{spec!r} is neither a run id of the ledger nor a workdir.")


# ------------------------------------------------------------------------------- list

def cmd_list(ledger: Ledger, experiment: str | None) -> str:
  runs = ledger.runs(experiment)
  if not runs:
    known = ledger.experiments()
    return (f"No attempts of {experiment!r} in {ledger.path}" +
            (f"; it holds {', '.join(known)}." if known else
             "; train with python -m practice_jax.main (it records each run) or import "
             "workdirs with `practice import`.") if experiment else
            f"No attempts yet in {ledger.path}.")
  out = []
  for name in sorted({r.experiment for r in runs}):
    attempts = ranked([r for r in runs if r.experiment == name])
    first = attempts[0]
    monitored = first.monitored_metric or "?"
    evaluators = [monitored] + sorted(
        {f"{ev}/{monitored.rpartition('/')[2]}" for r in attempts for ev in r.final}
        - {monitored})
    target = next((r.target for r in attempts if r.target), "")
    out.append(f"{name}: {len(attempts)} attempt{'s' * (len(attempts) != 1)}, best first "
               f"by {monitored} ({'higher' if first.higher_is_better() else 'lower'} is "
               f"better)" + (f"; target {target}" if target else ""))
    rows = []
    for r in attempts:
      when = (r.started or r.recorded or "")[:16].replace("T", " ")
      rows.append([r.label, when] +
                  [fmt(r, k, r.final_value(k)) if r.status == "finished" else r.status
                   for k in evaluators] +
                  [fmt_time(r.wall_time_s), target_text(r), changes(r) or "-",
                   r.note or ""])
    out.append(table(rows, ["run", "started (UTC)"] + evaluators +
                     ["time", "target", "changed", "note"]))
  return "\n\n".join(out)


# ---------------------------------------------------------------------------- compare

def _out_path(args, ledger_path: str, name: str) -> str:
  folder = args.out or os.path.join(os.path.dirname(os.path.abspath(ledger_path)),
                                    "practice")
  os.makedirs(folder, exist_ok=True)
  return os.path.join(folder, name)


def config_differences(runs: list[Run]) -> dict[str, list[Any]]:
  flats = [ledger_lib.flatten(r.config) for r in runs]
  keys = sorted(set().union(*flats))
  return {k: [f.get(k) for f in flats] for k in keys
          if k not in _WHERE_KEYS and len({repr(f.get(k)) for f in flats}) > 1}


def cmd_compare(runs: list[Run], png: str | None) -> str:
  base = runs[0]
  labels = [r.label for r in runs]
  lines = ["Attempts: " + "; ".join(
      f"{r.label} {r.experiment}" + (f" '{r.note}'" if r.note else "") +
      f" ({r.workdir})" for r in runs)]
  diffs = config_differences(runs)
  if diffs:
    lines += ["", "Config differences:",
              table([[k] + [fmt_value(v) for v in values] for k, values in diffs.items()],
                    ["key"] + labels)]
  else:
    lines += ["", "Config differences: none (same config; seeds and code may differ)."]
  code = {r.code_version for r in runs}
  if len(code) > 1:
    lines.append("Code versions differ: " + ", ".join(
        f"{r.label} {r.code_version}" for r in runs))
  keys = []
  for r in runs:
    for ev, metrics in r.final.items():
      keys += [f"{ev}/{m}" for m in metrics if f"{ev}/{m}" not in keys]
  if base.monitored_metric in keys:
    keys.remove(base.monitored_metric)
    keys.insert(0, base.monitored_metric)
  rows = []
  for key in keys:
    first = base.final_value(key)
    row = [key]
    for i, r in enumerate(runs):
      value = r.final_value(key)
      cell = fmt(r, key, value)
      if i and value is not None and first is not None and math.isfinite(value) \
          and math.isfinite(first):
        cell += f" ({fmt_delta(r, key, value - first)})"
      row.append(cell if r.status == "finished" else f"{cell} ({r.status})")
    rows.append(row)
  rows.append(["best " + (base.monitored_metric or "?")] +
              [fmt(r, r.monitored_metric or "", r.best_value()) for r in runs])
  rows.append(["wall time"] + [fmt_time(r.wall_time_s) for r in runs])
  rows.append(["steps"] + [str(r.steps or "-") for r in runs])
  if any(r.target for r in runs):
    rows.append(["target"] + [target_text(r) for r in runs])
  lines += ["", f"Final metrics (difference from {base.label}):", table(rows, ["metric"] +
                                                                      labels)]
  if png:
    from practice_jax.reporting import practice_plots
    if practice_plots.compare_curves(runs, png, title="Attempts " + " vs ".join(labels)):
      lines += ["", f"Learning curves overlaid: {png}"]
  return "\n".join(lines)


# ---------------------------------------------------------------------------- history

def history_points(runs: list[Run]) -> list[dict[str, Any]]:
  points, best, minutes = [], None, 0.0
  for i, r in enumerate(runs, 1):
    value = r.final_value() if r.status == "finished" else None
    if value is not None and not math.isfinite(value):
      value = None
    if better(r, value, best):
      best = value
    minutes += (r.wall_time_s or 0.0) / 60
    points.append({"attempt": i, "value": value, "best": best, "minutes": minutes,
                   "label": r.label, "met": r.target_met, "run": r})
  return points


def _parsed_targets(text: str) -> list:
  try:
    return ledger_lib.parse_targets(text)
  except ValueError:
    return []


def cmd_history(ledger: Ledger, experiment: str, png: str | None) -> str:
  runs = ledger.runs(experiment)
  if not runs:
    known = ledger.experiments()
    raise PracticeError(f"No attempts of {experiment!r} in {ledger.path}" +
                        (f"; it holds {', '.join(known)}." if known else "."))
  points = history_points(runs)
  key = runs[0].monitored_metric or "?"
  rows = [[str(p["attempt"]), p["label"], fmt(p["run"], key, p["value"])
           if p["value"] is not None else p["run"].status, fmt(p["run"], key, p["best"]),
           f"{p['minutes']:.1f}", target_text(p["run"]), p["run"].note]
          for p in points]
  lines = [f"{experiment}: personal best of {key} over {len(runs)} attempts",
           table(rows, ["attempt", "run", key, "personal best", "practice min", "target",
                        "note"])]
  if png:
    from practice_jax.reporting import practice_plots
    first = runs[0]
    target = next((t for r in reversed(runs) for t in _parsed_targets(r.target)
                   if t.key == key), None)
    if practice_plots.history(points, png, key, percent=first.percent(key),
                              higher_is_better=first.higher_is_better(),
                              title=f"{experiment}: personal best of {key}",
                              target=target.value if target else None):
      lines += ["", f"History: {png}"]
  return "\n".join(lines)


# --------------------------------------------------------------------------- feedback

@dataclasses.dataclass
class Finding:
  kind: str         # diverged | unstable | over-fitting | gap | under-fitting |
                    # still-improving | plateau | no-gain | gain | reference | target | best
  evidence: str
  advice: str = ""


def _scaled(run: Run, name: str, values: list[float]) -> list[float]:
  """Values on a scale where equal steps are equal progress, higher better: -log(1-x)
  for fractions (98% -> 99% is as much as 50% -> 75%), -log(x) for positive
  lower-is-better metrics (losses), the raw value otherwise."""
  higher = run.higher_is_better(name)
  out = []
  for v in values:
    if run.percent(name) and higher:
      out.append(-math.log(max(1.0 - v, 1e-6)))
    elif not higher and v > 0:
      out.append(-math.log(v))
    else:
      out.append(v if higher else -v)
  return out


def _where(run: Run, step: int) -> str:
  if not run.steps_per_epoch:
    return f"step {step}"
  return "epoch " + f"{step / run.steps_per_epoch:.2f}".rstrip("0").rstrip(".")


def _key(run: Run, key: str) -> Any:
  node: Any = run.config
  for part in key.split("."):
    if not isinstance(node, dict) or part not in node:
      return None
    node = node[part]
  return node


def reference_result(run: Run) -> dict[str, Any] | None:
  """The result the config file documents ('Result: 98.55% test accuracy ... after 10
  epochs, 21 s wall time'), when its docstring says it in that form."""
  if not run.config_file or not os.path.isfile(run.config_file):
    return None
  with open(run.config_file, encoding="utf-8") as f:
    text = " ".join(f.read(4000).split())
  match = re.search(r"Result:\s*([\d.]+)%\s+(\w+)\s+(\w+)", text)
  if match:
    value, evaluator, metric = float(match[1]) / 100, match[2], match[3]
  else:
    match = re.search(r"Result:\s*(\w+)\s+(\w+)\s+([\d.]+)", text)
    if not match:
      return None
    evaluator, metric, value = match[1], match[2], float(match[3])
  length = re.search(r"after ([\d.]+) (epochs|steps)", text)
  wall = re.search(r"([\d.]+) s wall time", text)
  return {"key": f"{evaluator}/{metric}", "value": value,
          "length": f"{length[1]} {length[2]}" if length else None,
          "wall_s": float(wall[1]) if wall else None}


def diagnose(run: Run, earlier: list[Run]) -> list[Finding]:
  """What the curves of `run` say, each with its evidence and what to try next;
  `earlier` are the experiment's previous attempts (oldest first)."""
  found: list[Finding] = []
  key = run.monitored_metric or "validation/loss"
  evaluator, _, name = key.rpartition("/")
  lr = _key(run, "optimizer.learning_rate")
  lr_text = f"optimizer.learning_rate={lr:g}" if isinstance(lr, (int, float)) else None
  train_steps, train_loss = run.series("train", "loss")
  val_steps, val_loss = run.series(evaluator, "loss")
  steps, values = run.series(evaluator, name)

  # Divergence and instability.
  bad = next(((s, v) for s, v in zip(train_steps + val_steps, train_loss + val_loss)
              if not math.isfinite(v)), None)
  if run.status == "diverged" or bad:
    last_step = max((r["step"] for r in run.records), default=0)
    at = (f" at {_where(run, bad[0])} (loss {bad[1]})" if bad else
          f" after its last record at {_where(run, last_step)} (the loop's divergence "
          f"guard stopped it before a non-finite value was recorded)")
    last = next((v for v in reversed(train_loss) if math.isfinite(v)), None)
    found.append(Finding(
        "diverged", f"training diverged{at}" + (f"; the last finite train loss was "
                                                f"{last:.4g}" if last is not None else ""),
        (f"lower the learning rate ({lr_text} -> {lr / 3:g}), " if lr_text else
         "lower the learning rate, ") + "add gradient clipping "
        "(optimizer.grad_clip_norm=1.0) or a longer warmup (schedule.warmup_epochs)."))
  finite = [(s, v) for s, v in zip(train_steps, train_loss) if math.isfinite(v)]
  val_finite = [v for v in val_loss if math.isfinite(v)]
  start = (val_loss[0] if val_steps and val_steps[0] == 0 and math.isfinite(val_loss[0])
           else finite[0][1] if finite else None)
  ends = [(what, values[-1]) for what, values in
          (("train", [v for _, v in finite]), (evaluator, val_finite)) if values]
  rose = [(what, end) for what, end in ends if start and end >= 0.95 * start]
  if rose and not any(f.kind == "diverged" for f in found) and (
      len(finite) + len(val_finite) >= 3):
    what, end = max(rose, key=lambda e: e[1])
    grew = end / start
    found.append(Finding(
        "unstable", f"the {what} loss did not go down: {end:.4g} at the end against "
        f"{start:.4g} at the start" + (f" ({grew:.3g} times larger: it blew up)"
                                       if grew >= 10 else ""),
        f"the learning rate is likely too high ({lr_text}); try a tenth of it "
        f"({lr / 10:g}), or check the data and labels." if lr_text else
        "the learning rate is likely too high; check the data and labels too."))
  elif len(finite) >= 3 and not any(f.kind == "diverged" for f in found):
    jumps = [(finite[i][0], finite[i - 1][1], finite[i][1]) for i in range(2, len(finite))
             if finite[i][1] > 1.5 * finite[i - 1][1]]
    if jumps:
      s, a, b = max(jumps, key=lambda j: j[2] / j[1])
      found.append(Finding(
          "unstable", f"the train loss jumped from {a:.4g} to {b:.4g} at {_where(run, s)}"
          f" ({len(jumps)} jump{'s' * (len(jumps) > 1)} of more than 50%)",
          (f"lower the learning rate ({lr_text} -> {lr / 3:g}) or clip gradients "
           f"(optimizer.grad_clip_norm=1.0)." if lr_text else "lower the learning rate.")))

  # Over-fitting: the validation loss turns up while the train loss keeps falling.
  overfit = False
  val = [(s, v) for s, v in zip(val_steps, val_loss) if math.isfinite(v)]
  if len(val) >= 3 and finite and not any(f.kind == "diverged" for f in found):
    low = min(range(len(val)), key=lambda i: val[i][1])
    s_low, v_low = val[low]
    s_end, v_end = val[-1]
    train_at = lambda s: min(finite, key=lambda p: abs(p[0] - s))[1]  # noqa: E731
    if (low < len(val) - 1 and v_end > 1.05 * v_low and train_at(s_end) < train_at(s_low)
        and train_at(s_end) < v_end):
      overfit = True
      best_at = _where(run, s_low)
      advice = [f"stop near {best_at}: early_stopping.patience=3"
                + (" with evaluate_checkpoint='best'"
                   if _key(run, "evaluate_checkpoint") != "best" else "")]
      dropout = _key(run, "model.dropout")
      if isinstance(dropout, (int, float)):
        advice.append(f"more dropout (model.dropout={dropout:g} -> {min(dropout + 0.2, 0.7):g})")
      wd = _key(run, "optimizer.weight_decay")
      if isinstance(wd, (int, float)):
        advice.append(f"more weight decay (optimizer.weight_decay={wd:g} -> "
                      f"{wd * 10 if wd else 1e-4:g})")
      if _key(run, "task.augment") in (False, "", "none", None) and \
          "augment" in (run.config.get("task") or {}):
        advice.append("data augmentation (task.augment)")
      if _key(run, "task.label_smoothing") == 0:
        advice.append("label smoothing (task.label_smoothing=0.1)")
      found.append(Finding(
          "over-fitting",
          f"the {evaluator} loss was lowest ({v_low:.4g}) at {best_at} and rose "
          f"{100 * (v_end / v_low - 1):.0f}% to {v_end:.4g} by {_where(run, s_end)}, while "
          f"the train loss fell from {train_at(s_low):.4g} to {train_at(s_end):.4g}",
          "; ".join(advice) + "."))
    elif val and finite and train_at(s_end) < 0.5 * v_end:
      found.append(Finding(
          "gap", f"the train loss ({train_at(s_end):.4g}) is under half the {evaluator} "
          f"loss ({v_end:.4g}) at the end: the model fits its training examples much "
          f"better than unseen ones",
          "watch for over-fitting in a longer run; regularization (dropout, weight decay, "
          "augmentation) narrows the gap."))
    elif val and finite and train_at(s_end) >= 0.95 * v_end and not any(
        f.kind in ("diverged", "unstable") for f in found):
      target_missed = run.target_met is False
      dropout = _key(run, "model.dropout")
      found.append(Finding(
          "under-fitting", f"the train loss ({train_at(s_end):.4g}) is no lower than the "
          f"{evaluator} loss ({v_end:.4g}): the model does not fit even its training "
          f"examples better than unseen ones" +
          (f" (the train loss is measured with dropout {dropout:g} active, which raises "
           f"it)" if isinstance(dropout, (int, float)) and dropout > 0 else "") +
          (", and the target was not met" if target_missed else ""),
          "there is room to fit more: train longer, raise the learning rate, or use a "
          "larger model; lower the regularization (dropout, weight decay) if it is high."))

  # Still improving at the end, or a plateau: on a scale of equal progress.
  pts = [(s, v) for s, v in zip(steps, values) if math.isfinite(v)]
  if pts and pts[0][0] == 0 and len(pts) > 2:
    pts = pts[1:]      # the evaluation before training says nothing about the trend
  after_start = sum(1 for s, _ in pts if s > 0)
  if after_start < 3 and run.status == "finished":
    every = max(1, (run.steps or 10) // 10)
    found.append(Finding(
        "few-evaluations", f"{key} was evaluated only {after_start} time(s) after training "
        f"began: too few to see over-fitting, a plateau or a trend",
        f"evaluate more often (eval_every_steps={every} gives about 10 evaluations)."))
  if len(pts) >= 3 and not any(f.kind == "diverged" for f in found):
    scaled = _scaled(run, name, [v for _, v in pts])
    top, bottom = max(scaled), min(scaled)
    tol = 0.03 * (top - bottom) if top > bottom else 0.0
    last_gain = scaled[-1] - max(scaled[:-1])
    reached = next(i for i in range(len(scaled)) if top - max(scaled[:i + 1]) <= tol)
    span = pts[-1][0] - pts[0][0]
    after = (pts[-1][0] - pts[reached][0]) / span if span else 0.0
    span_last = pts[-1][0] - pts[-2][0]
    rate = (scaled[-1] - scaled[0]) / span if span else 0.0
    if last_gain > tol > 0 and span_last and last_gain / span_last >= 0.3 * rate:
      epochs = _key(run, "num_epochs")
      found.append(Finding(
          "still-improving", f"{key} was still improving at the end: "
          f"{fmt(run, key, pts[-2][1])} -> {fmt(run, key, pts[-1][1])} in the last "
          f"evaluation interval",
          (f"train longer (num_epochs={epochs:g} -> {2 * epochs:g})"
           if isinstance(epochs, (int, float)) and not _key(run, "num_steps") else
           "train longer (more steps)") + "; the curve has not flattened yet."))
    elif len(scaled) - 1 - reached >= 2 and after >= 0.3 and tol > 0:
      schedule = _key(run, "schedule.name")
      advice = (f"a decaying schedule (schedule.name={schedule!r} -> 'warmup_cosine') or "
                f"a lower learning rate" if schedule == "constant" else
                "stop earlier to save the time (early_stopping.patience), or change the "
                "model or regularization: more of the same training does not help")
      if any(f.kind == "unstable" for f in found):
        advice = ("the learning rate is likely too high to settle into a better minimum: "
                  + (f"lower it ({lr_text} -> {lr / 3:g})" if lr_text else "lower it"))
      elif overfit:
        advice = "see over-fitting above: " + advice
      found.append(Finding(
          "plateau", f"{key} reached {fmt(run, key, pts[reached][1])} at "
          f"{_where(run, pts[reached][0])} and gained no more than noise in the "
          f"{len(scaled) - 1 - reached} evaluations after ({100 * after:.0f}% of the "
          f"training)", advice + "."))

  # Against the previous attempt, the personal best, the reference and the target.
  value = run.final_value() if run.status == "finished" else None
  if earlier and value is not None:
    previous = earlier[-1]
    before = previous.final_value() if previous.status == "finished" else None
    changed = config_differences([previous, run])
    what = ("; the change: " + ", ".join(f"{k} {fmt_value(a)} -> {fmt_value(b)}"
                                         for k, (a, b) in list(changed.items())[:5])
            if changed else "; the config was the same (only the seed or code differ)")
    if before is not None and math.isfinite(before):
      delta = value - before
      signed = delta if run.higher_is_better() else -delta
      if signed <= noise(run, key, before):
        found.append(Finding(
            "no-gain", f"no gain over the previous attempt {previous.label}: {key} "
            f"{fmt(run, key, value)} against {fmt(run, key, before)} "
            f"({fmt_delta(run, key, delta)}){what}",
            "this change did not help: revert it, or try it the other way or larger; "
            "change one thing at a time."))
      else:
        found.append(Finding(
            "gain", f"a gain of {fmt_delta(run, key, delta)} over the previous attempt "
            f"{previous.label} ({fmt(run, key, before)} -> {fmt(run, key, value)}){what}",
            "keep the change; try the next one on top of it."))
    best = ranked([r for r in earlier if r.final_value() is not None])
    if best and best[0].status == "finished":
      top_run, top_value = best[0], best[0].final_value()
      if better(run, value, top_value):
        within = abs(value - top_value) <= noise(run, key, top_value)
        found.append(Finding("best", f"a new personal best: {fmt(run, key, value)} beats "
                                     f"{top_run.label}'s {fmt(run, key, top_value)}"
                                     + (" (by less than the noise)" if within else "")))
      else:
        found.append(Finding(
            "best", f"the personal best is {top_run.label} with {fmt(run, key, top_value)};"
            f" this attempt is {fmt_delta(run, key, value - top_value)} from it"))
  reference = reference_result(run)
  if reference and run.status == "finished":
    mine = run.final_value(reference["key"])
    if mine is not None:
      length = (f" after {reference['length']}" if reference["length"] else "")
      here = _where(run, run.steps) if run.steps else ""
      found.append(Finding(
          "reference", f"the config documents {fmt(run, reference['key'], reference['value'])}"
          f" {reference['key']}{length}" + (f" in {fmt_time(reference['wall_s'])}"
                                            if reference["wall_s"] else "") +
          f"; this run: {fmt(run, reference['key'], mine)} "
          f"({fmt_delta(run, reference['key'], mine - reference['value'])}) at the end "
          f"({here}, {fmt_time(run.wall_time_s)})"))
  if run.target:
    met = run.target_met
    found.append(Finding(
        "target", f"target {run.target}: " +
        ("not measurable (the run has no such metric)" if met is None else
         f"met after {fmt_time(run.target_time_s)} (step {run.target_step})" if met
         else "not met")))
  return found


def cmd_feedback(run: Run, ledger: Ledger | None) -> str:
  earlier = []
  if ledger is not None:
    earlier = [r for r in ledger.runs(run.experiment) if r.id != run.id and
               (r.started or "") < (run.started or "~")]
  findings = diagnose(run, earlier)
  lines = [f"Feedback on {run.label} ({run.experiment}" +
           (f", '{run.note}'" if run.note else "") + f", {run.workdir}):"]
  problems = [f for f in findings if f.advice]
  facts = [f for f in findings if not f.advice]
  for f in problems:
    lines += [f"- {f.kind}: {f.evidence}.", f"    try: {f.advice}"]
  if run.status == "unfinished":
    lines.append("- unfinished: the run left no run.json: it is still running, or was "
                 "stopped before its end; this is feedback on its curves so far.")
  elif not any(f.kind in ("diverged", "unstable", "over-fitting", "gap", "under-fitting",
                          "still-improving", "plateau", "few-evaluations") for f in findings):
    lines.append("- the curves look healthy: no divergence, over-fitting or plateau.")
  for f in facts:
    lines.append(f"- {f.kind}: {f.evidence}.")
  return "\n".join(lines)


# ----------------------------------------------------------------------------- report

def cmd_report(ledger: Ledger, experiment: str | None, out: str | None) -> str:
  """Writes the HTML page of the ledger (reporting/html_report.py): to `out` if it names
  an .html file, else report.html in `out` or in practice/ beside the ledger."""
  if experiment and not ledger.runs(experiment):
    known = ledger.experiments()
    raise PracticeError(f"No attempts of {experiment!r} in {ledger.path}" +
                        (f"; it holds {', '.join(known)}." if known else "."))
  if out and out.lower().endswith((".html", ".htm")):
    path = out
  else:
    folder = out or os.path.join(os.path.dirname(ledger.path), "practice")
    path = os.path.join(folder, f"report_{experiment}.html" if experiment
                        else "report.html")
  from practice_jax.reporting import html_report
  html_report.write(ledger, path, experiment)
  count = len(ledger.runs(experiment))
  return (f"Report of {count} attempt{'s' * (count != 1)} written to {path} (one "
          f"self-contained file: open it in a browser).")


# ------------------------------------------------------------------------------- main

def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m practice_jax.practice", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog=__doc__.split("\n\n", 1)[1])
  parser.add_argument("--ledger", default=DEFAULT_LEDGER,
                      help=f"the ledger database (default {DEFAULT_LEDGER})")
  parser.add_argument("--out", default=None,
                      help="folder for the PNGs (default: practice/ beside the ledger)")
  sub = parser.add_subparsers(dest="command", required=True)
  p = sub.add_parser("list", help="attempts per experiment, best first")
  p.add_argument("experiment", nargs="?")
  p = sub.add_parser("compare", help="two or more attempts side by side")
  p.add_argument("runs", nargs="+")
  p = sub.add_parser("history", help="personal best against attempts and time")
  p.add_argument("experiment")
  p = sub.add_parser("feedback", help="a diagnosis of one attempt")
  p.add_argument("run")
  p = sub.add_parser("import", help="record workdirs trained before (or elsewhere)")
  p.add_argument("workdirs", nargs="+")
  p.add_argument("--config", default=None,
                 help="their config file (default: configs/<workdir name>.py, else the "
                      "config file nearest their config)")
  p.add_argument("--experiment", default=None, help="their experiment name")
  p.add_argument("--note", default="")
  p = sub.add_parser("note", help="set the note of an attempt")
  p.add_argument("run")
  p.add_argument("text")
  p = sub.add_parser("report", help="the ledger as one self-contained HTML page")
  p.add_argument("experiment", nargs="?")
  return parser


def run_command(argv: list[str]) -> str:
  args = _parser().parse_args(argv)
  path = args.ledger
  if args.command in ("list", "history", "note", "report") and not os.path.isfile(path):
    raise PracticeError(f"No ledger at {path}; train a run first (python -m "
                        f"practice_jax.main records it beside its workdir) or pass "
                        f"--ledger=PATH.")
  ledger = Ledger(path) if args.command == "import" or os.path.isfile(path) else None
  try:
    if args.command == "list":
      return cmd_list(ledger, args.experiment)
    if args.command == "history":
      return cmd_history(ledger, args.experiment, _out_path(
          args, path, f"history_{args.experiment}.png"))
    if args.command == "compare":
      if len(args.runs) < 2:
        raise PracticeError("compare needs at least two runs.")
      runs = [resolve(spec, ledger) for spec in args.runs]
      name = "compare_" + "_".join(r.label.lstrip("#") for r in runs) + ".png"
      return cmd_compare(runs, _out_path(args, path, name))
    if args.command == "feedback":
      return cmd_feedback(resolve(args.run, ledger), ledger)
    if args.command == "report":
      return cmd_report(ledger, args.experiment, args.out)
    if args.command == "note":
      run = resolve(args.run, ledger)
      if run.id is None:
        raise PracticeError(f"{args.run} is not in the ledger; import it first.")
      ledger.set_note(run.id, args.text)
      return f"Note of {run.label} set."
    lines = []
    for workdir in args.workdirs:
      try:
        run = ledger_lib.read_workdir(workdir, args.config, args.experiment, args.note)
      except ValueError as e:
        lines.append(f"skipped {workdir}: {e}")
        continue
      run_id = ledger.add(run)
      run.status = ledger.get(run_id).status      # what training knew, if it recorded it
      key = run.monitored_metric or ""
      lines.append(f"imported {workdir} as #{run_id} ({run.experiment}, {run.status}, "
                   f"{key} {fmt(run, key, run.final_value())})")
    return "\n".join(lines)
  finally:
    if ledger is not None:
      ledger.close()


def main(argv: list[str] | None = None) -> int:
  try:
    print(run_command(sys.argv[1:] if argv is None else argv))
  except PracticeError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
