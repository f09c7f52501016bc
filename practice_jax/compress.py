"""Compress a trained image classifier and measure what it costs:

    python -m practice_jax.compress prune --workdir=runs/mnist --sparsities=0.5,0.8,0.9,0.95
    python -m practice_jax.compress quantize --workdir=runs/mnist

``prune``: one-shot magnitude pruning (practice_jax/pruning.py) of the run's checkpoint
(the one it reported, or ``--checkpoint``) at each sparsity, over all kernels at once
(``global``) and/or the same fraction of each layer (``layer``; ``--scopes``), evaluated
on the test split. With ``--finetune_steps=N`` each pruned model is then fine-tuned N
steps on the training split with its masks fixed (pruning.keep_masks, last in the run's
own optimizer chain: the pruned weights stay exactly zero) at ``--finetune_learning_rate``
(default: the run's learning rate / 10) decayed along a cosine, and evaluated again; the
run's workdir and checkpoints are not touched. Writes ``prune.json`` (accuracy, loss, the
fraction of zeros of every kernel, the nonzero parameters; fine-tuned accuracy and loss)
and ``prune.png`` (test accuracy against sparsity) into the workdir, and prints the
table. Gradual pruning during
training is a config setting instead: ``optimizer.prune_sparsity`` (configs/mnist_pruned.py).

``quantize``: post-training int8, int4 and int2 quantization (practice_jax/quantize.py):
our own weight-only per-channel int8 (``ours``) and int4 (``ours4``) and qwix's modes
(``--modes``: w8, w8a8, w8a8_static, w4a8, w4, w2a8; qwix's need ``pip install -e
'.[compress]'``), each against the float32 model on the test split: accuracy, top-1
agreement with float32, the largest logit difference, the parameters' size in bytes, and
the median time of one batch of ``--latency_batch`` images on this machine. Writes
``quantize.json`` into the workdir and prints the table.

Both take image classifiers (task 'classification' or 'knowledge_distillation');
anything else is refused in one sentence.
"""

from __future__ import annotations

import sys
import time

from absl import app, flags, logging

from practice_jax import quiet
from practice_jax.errors import UserError

COMMANDS = ("prune", "quantize")
OURS = {"ours": 8, "ours4": 4}         # quantize: our weight-only modes and their bits

def define_flags() -> None:
  """The command's flags (defined only when it runs, so importing this module defines
  none and it can share a process with the other commands' modules)."""
  flags.DEFINE_string("workdir", None, "The trained run's workdir.")
  flags.DEFINE_enum("checkpoint", None, ["best", "last"],
                    "Which checkpoint (default: the one the run reported).")
  flags.DEFINE_string("sparsities", "0.5,0.8,0.9,0.95",
                      "prune: comma-separated fractions of kernel weights set to zero, "
                      "each in [0, 1).")
  flags.DEFINE_string("scopes", "global,layer",
                      "prune: 'global', 'layer' or both, comma-separated.")
  flags.DEFINE_integer("finetune_steps", 0,
                       "prune: fine-tune each pruned model this many steps, masks fixed "
                       "(0: no fine-tuning).", lower_bound=0)
  flags.DEFINE_float("finetune_learning_rate", 0.0,
                     "prune: peak learning rate of the fine-tuning (0: the run's / 10).",
                     lower_bound=0.0)
  flags.DEFINE_string("modes", "", "quantize: comma-separated, of ours, ours4, w8, w8a8, "
                      "w8a8_static, w4a8, w4, w2a8 (default: all; only ours, ours4 "
                      "without qwix).")
  flags.DEFINE_integer("calibration_examples", 1000,
                       "quantize: training images that calibrate w8a8_static.")
  flags.DEFINE_integer("latency_batch", 1,
                       "quantize: images per timed call (0: no timing).")


def _floats(text: str) -> list[float]:
  try:
    values = [float(v) for v in text.split(",") if v.strip()]
  except ValueError:
    raise UserError(f"--sparsities={text!r} must be comma-separated numbers such as "
                    f"0.5,0.8,0.9.") from None
  if not values or not all(0.0 <= v < 1.0 for v in values):
    raise UserError(f"--sparsities={text!r}: give one or more fractions in [0, 1).")
  return values


def load_classifier(workdir: str, which: str | None):
  """(experiment, state, step, which) of an image classifier run, with its data."""
  from practice_jax import train
  from practice_jax.tasks.classification import ClassificationTask
  exp, state, step, which = train.load_trained(workdir, which, with_data=True)
  if not isinstance(exp.task, ClassificationTask) or exp.config.data.name == "csv":
    raise UserError(f"{workdir} holds a {exp.config.task.name!r} run on "
                    f"{exp.config.data.name!r}; compress takes image classifiers only.")
  if "test" not in exp.source.eval_splits:
    raise UserError(f"{workdir}'s dataset has no test split to measure on.")
  return exp, state, step, which


# -- prune ----------------------------------------------------------------------------------

def finetune(exp, state, masks, steps: int, learning_rate: float):
  """The state with its parameters pruned by `masks`, then trained `steps` steps on the
  training split through the task's own train step, with the run's optimizer (learning
  rate `learning_rate` decayed along a cosine; no gradual pruning, EMA or accumulation)
  followed by pruning.keep_masks: the pruned weights stay exactly zero. The state given
  is not changed (the steps run on a host copy)."""
  import jax
  import jax.numpy as jnp
  import ml_collections
  import optax

  from practice_jax import optim, pruning, train
  config, task = exp.config, exp.task
  opt = ml_collections.ConfigDict(config.optimizer.to_dict())
  opt.learning_rate = learning_rate
  for key, off in (("prune_sparsity", 0.0), ("ema_decay", 0.0), ("accumulate_steps", 1)):
    if key in opt:
      opt[key] = off
  schedule = ml_collections.ConfigDict(config.schedule.to_dict())
  schedule.name = "cosine"
  tx, _ = optim.build(opt, schedule, optim.Plan(steps, exp.plan.steps_per_epoch))
  tx = optax.chain(tx, pruning.keep_masks(masks))
  host = jax.device_get(state)
  params = jax.device_get(pruning.apply_masks(host.params, masks))
  tuned = exp.parallel.put_state(host.replace(step=jnp.zeros((), jnp.int32), params=params,
                                              opt_state=tx.init(params)))
  exp.source.bind(exp.parallel)          # the training split onto the devices
  per_epoch = exp.source.steps_per_epoch(exp.local_batch) or steps
  saved_tx, task.tx = task.tx, tx
  try:
    chunk = exp.parallel.compile_train_chunk(task.train_step, config.batch_size,
                                             unroll=task.unroll_on_cpu)
    step = 0
    while step < steps:       # the loop's chunks: k steps, never across an epoch's end
      end = train.chunk_end(step, steps, config.steps_per_dispatch, per_epoch,
                            chunk.unrolled)
      tuned, _, _ = chunk(tuned, exp.source.batches(step, end - step, exp.local_batch),
                          end - step)
      step = end
  finally:
    task.tx = saved_tx
  return tuned


def prune_table(exp, state, sparsities: list[float], scopes: list[str],
                finetune_steps: int = 0, finetune_learning_rate: float = 0.0) -> dict:
  """The test metrics of the run pruned at each sparsity and scope (and unpruned), and
  with `finetune_steps`, of each pruned model fine-tuned with its masks fixed."""
  import jax

  from practice_jax import pruning
  evaluate = exp.task.evaluators()["test"].run
  learning_rate = finetune_learning_rate or exp.config.optimizer.learning_rate / 10
  host = jax.device_get(state.params)
  n_kernel = sum(v.size for v in jax.tree.leaves(jax.tree.map(
      lambda p, c: p if c else None, host, pruning.prunable(host))))
  n_all = sum(int(v.size) for v in jax.tree.leaves(host))
  dense = evaluate(state)
  rows = []
  for scope in scopes:
    for s in sparsities:
      pruned = pruning.apply_masks(host, pruning.magnitude_masks(host, s, scope))
      metrics = evaluate(state.replace(params=exp.parallel.put_state(pruned)))
      zeros = pruning.sparsity(pruned)
      nonzero = n_all - int(round(zeros["total"] * n_kernel))
      row = {"scope": scope, "sparsity": s, **metrics,
             "kernel_sparsity": zeros["total"], "nonzero_parameters": nonzero,
             "layers": {k: v for k, v in zeros.items() if k != "total"}}
      if finetune_steps:
        masks = pruning.magnitude_masks(host, s, scope)
        tuned = finetune(exp, state, masks, finetune_steps, learning_rate)
        tuned_metrics = evaluate(tuned)
        row.update({f"finetuned_{k}": v for k, v in tuned_metrics.items()})
        row["finetuned_kernel_sparsity"] = pruning.sparsity(
            jax.device_get(tuned.params))["total"]
      rows.append(row)
  table = {"dense": {**dense, "parameters": n_all, "kernel_parameters": n_kernel},
           "pruned": rows}
  if finetune_steps:
    table["finetune"] = {"steps": finetune_steps, "learning_rate": learning_rate,
                         "schedule": "cosine", "batch_size": exp.config.batch_size}
  return table


def format_prune(table: dict, title: str) -> str:
  d = table["dense"]
  tuned = "finetune" in table
  lines = [title, f"{'scope':8} {'sparsity':>8} {'accuracy':>9} {'loss':>8} "
           f"{'nonzero params':>15}" + (f" {'fine-tuned':>10} {'its loss':>8}" if tuned else ""),
           f"{'dense':8} {0:8.0%} {d['accuracy']:9.2%} {d['loss']:8.4f} {d['parameters']:15,}"]
  for r in table["pruned"]:
    lines.append(f"{r['scope']:8} {r['sparsity']:8.0%} {r['accuracy']:9.2%} "
                 f"{r['loss']:8.4f} {r['nonzero_parameters']:15,}"
                 + (f" {r['finetuned_accuracy']:10.2%} {r['finetuned_loss']:8.4f}"
                    if tuned else ""))
  if tuned:
    f = table["finetune"]
    lines.append(f"fine-tuned: {f['steps']} steps of batch {f['batch_size']}, masks fixed, "
                 f"learning rate {f['learning_rate']:g} with cosine decay")
  return "\n".join(lines)


def plot_prune(table: dict, path: str, title: str) -> None:
  from practice_jax.reporting.plots import plt
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  for scope, marker in (("global", "o"), ("layer", "s")):
    rows = [r for r in table["pruned"] if r["scope"] == scope]
    if rows:
      line, = ax.plot([0.0] + [r["sparsity"] for r in rows],
                      [table["dense"]["accuracy"]] + [r["accuracy"] for r in rows],
                      marker=marker, label=f"{scope} magnitude pruning")
      if "finetune" in table:
        ax.plot([0.0] + [r["sparsity"] for r in rows],
                [table["dense"]["accuracy"]] + [r["finetuned_accuracy"] for r in rows],
                marker=marker, linestyle="--", color=line.get_color(),
                label=f"{scope}, fine-tuned {table['finetune']['steps']} steps")
  ax.axhline(table["dense"]["accuracy"], color="grey", linestyle=":", label="unpruned")
  ax.set_xlabel("sparsity (fraction of kernel weights set to zero)")
  ax.set_ylabel("test accuracy")
  ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}" if v < 0.995 else f"{v:.1%}")
  ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def run_prune(workdir: str, which: str | None, sparsities: list[float],
              scopes: list[str], finetune_steps: int = 0,
              finetune_learning_rate: float = 0.0) -> dict:
  from practice_jax.reporting.artifacts import Artifacts
  exp, state, step, which = load_classifier(workdir, which)
  table = prune_table(exp, state, sparsities, scopes, finetune_steps,
                      finetune_learning_rate)
  table.update({"workdir": workdir, "checkpoint": which, "step": int(step),
                "note": "one-shot magnitude pruning of the kernels" + (
                    f", then {finetune_steps} fine-tuning steps with the masks fixed"
                    if finetune_steps else ", no fine-tuning")})
  title = f"{exp.task.title()}, one-shot magnitude pruning ({which} checkpoint, step {step})"
  out = Artifacts(workdir, exp.parallel.is_main, True)
  out.json("prune.json", table)
  out.figure("prune.png", lambda path: plot_prune(table, path, title))
  print(format_prune(table, title + ", test split:"))
  print(f"written: {workdir}/prune.json, {workdir}/prune.png")
  return table


# -- quantize -------------------------------------------------------------------------------

def _latency_ms(fn, images, repeats: int = 20) -> float:
  import numpy as np
  np.asarray(fn(images))                    # compile
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    np.asarray(fn(images))
    times.append(time.perf_counter() - start)
  return float(np.median(times) * 1e3)


def quantize_table(exp, state, modes: list[str], calibration_examples: int,
                   latency_batch: int) -> dict:
  import jax
  import numpy as np

  from practice_jax import quantize
  task = exp.task
  test = exp.source.eval_splits["test"]
  images, labels = test["image"], test["label"]
  batch = exp.config.eval_batch_size
  reference = quantize.float_logits(task, state)
  float_out = quantize.predict_split(reference, images, batch)
  float_params = quantize.plain_params(task, state)

  def row(name, fn, params, note):
    logits = float_out if fn is reference else quantize.predict_split(fn, images, batch)
    r = {"method": name, "note": note,
         "accuracy": float(np.mean(logits.argmax(-1) == labels)),
         "agreement": float(np.mean(logits.argmax(-1) == float_out.argmax(-1))),
         "max_logit_difference": float(np.max(np.abs(logits - float_out))),
         "size_bytes": quantize.size_bytes(params)}
    if latency_batch:
      r["latency_ms"] = _latency_ms(fn, images[:latency_batch])
    return r

  rows = [row("float32", reference, float_params, "the trained model")]
  for mode in modes:
    if mode in OURS:
      bits = OURS[mode]
      quantized, dequantized = quantize.int8_weights(float_params, bits)
      rows.append(row(f"int{bits} weights (ours)",
                      quantize.float_logits(task, state, dequantized), quantized,
                      "per-channel symmetric, dequantized for float compute"))
    else:
      calibration = None
      if mode == "w8a8_static":
        train_images = exp.source.train["image"]
        calibration = np.asarray(jax.device_get(train_images[:calibration_examples]))
      fn, params = quantize.qwix_quantize(task, state, mode, calibration)
      notes = {"w8": "qwix: Dense int8 weights; conv w8a8 dynamic (qwix needs both)",
               "w8a8": "qwix: int8 weights and activations, dynamic range",
               "w8a8_static": f"qwix: int8 weights and activations, static range "
                              f"({len(calibration)} calibration images)"
               if calibration is not None else "",
               "w4a8": "qwix: Dense int4 weights, int8 activations (dynamic); conv w8a8",
               "w4": "qwix: Dense int4 weights, float activations; conv w8a8",
               "w2a8": "qwix: Dense int2 weights, int8 activations (dynamic); conv w8a8"}
      rows.append(row(f"qwix {mode}", fn, params, notes[mode]))
  return {"rows": rows, "test_examples": int(len(labels)),
          "latency_batch": latency_batch}


def format_quantize(table: dict, title: str) -> str:
  base = table["rows"][0]["size_bytes"]
  lines = [title, f"{'method':22} {'accuracy':>9} {'agree':>8} {'max|dlogit|':>11} "
           f"{'bytes':>11} {'ratio':>6}" + (f" {'ms/call':>8}" if table["latency_batch"] else "")]
  for r in table["rows"]:
    lines.append(f"{r['method']:22} {r['accuracy']:9.2%} {r['agreement']:8.2%} "
                 f"{r['max_logit_difference']:11.4f} {r['size_bytes']:11,} "
                 f"{base / r['size_bytes']:5.2f}x"
                 + (f" {r['latency_ms']:8.2f}" if "latency_ms" in r else ""))
  return "\n".join(lines)


def run_quantize(workdir: str, which: str | None, modes: list[str],
                 calibration_examples: int = 1000, latency_batch: int = 1) -> dict:
  from practice_jax import quantize
  from practice_jax.reporting.artifacts import Artifacts
  allowed = tuple(OURS) + quantize.QWIX_MODES
  for mode in modes:
    if mode not in allowed:
      raise UserError(f"--modes has {mode!r}; choose from {', '.join(allowed)}"
                      + (" (int4 activations do not run on XLA:CPU)"
                         if mode.endswith("a4") else "") + ".")
  if any(m not in OURS for m in modes) and not quantize.qwix_available():
    raise UserError(quantize.QWIX_MISSING)
  if calibration_examples < 1:
    raise UserError(f"--calibration_examples={calibration_examples} must be at least 1.")
  exp, state, step, which = load_classifier(workdir, which)
  table = quantize_table(exp, state, modes, calibration_examples, latency_batch)
  table.update({"workdir": workdir, "checkpoint": which, "step": int(step)})
  Artifacts(workdir, exp.parallel.is_main, True).json("quantize.json", table)
  print(format_quantize(table, f"{exp.task.title()}: post-training quantization "
                        f"({which} checkpoint, step {step}), test split, "
                        f"{table['test_examples']} examples; ms/call: batch of "
                        f"{latency_batch}, median of 20, this CPU:"))
  print(f"written: {workdir}/quantize.json")
  return table


def main(argv: list[str]) -> int:
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  try:
    if len(argv) != 2 or argv[1] not in COMMANDS:
      raise UserError(f"Say what to do: python -m practice_jax.compress "
                      f"{{{'|'.join(COMMANDS)}}} --workdir=DIR [flags].")
    if not f.workdir:
      raise UserError("--workdir is required: the trained run to compress.")
    if argv[1] == "prune":
      scopes = [s.strip() for s in f.scopes.split(",") if s.strip()]
      if not scopes or any(s not in ("global", "layer") for s in scopes):
        raise UserError(f"--scopes={f.scopes!r}: use global, layer or global,layer.")
      run_prune(f.workdir, f.checkpoint, _floats(f.sparsities), scopes, f.finetune_steps,
                f.finetune_learning_rate)
    else:
      from practice_jax import quantize
      modes = [m.strip() for m in f.modes.split(",") if m.strip()] or (
          [*OURS, *quantize.QWIX_MODES] if quantize.qwix_available() else [*OURS])
      run_quantize(f.workdir, f.checkpoint, modes, f.calibration_examples,
                   f.latency_batch)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  quiet.install()   # before TensorFlow or XLA load; --verbosity shows their lines
  define_flags()
  app.run(main)
