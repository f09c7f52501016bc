"""Transfer learning: a fresh run starts from another run's parameters (config.init_from).

On a fresh start (the workdir has no checkpoint yet; a resumed run restores its own), the
new task's state is built as usual, then every parameter, and every entry of the model
state (batch-norm statistics), whose source path (filtered by ``init_from.include``,
renamed by ``init_from.rename``) exists in the new model with the same shape is replaced
by the source's value. What the source lacks keeps its fresh initialisation. The head (the
last Dense layer: parameters whose shapes differ only in their last dimension, the number
of classes) is re-initialised when the class count differs; any other shape mismatch is
refused in one sentence before training. The optimizer state and the step start fresh. A
source trained with LoRA adapters gives its merged weights (lora.merge).

What was taken is printed and written to <workdir>/init_from.json, which the run record
(records/run.json) carries as its 'init_from' entry.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from practice_jax import lora, optim
from practice_jax.errors import UserError

RECORD_FILE = "init_from.json"
CHECKPOINTS = "checkpoints"        # workdir.LAST (not imported: workdir imports tasks)


def _section(config) -> ml_collections.ConfigDict | None:
  section = config.get("init_from")
  return section if section is not None and section.workdir else None


def single_model(task_cls) -> bool:
  """Whether the task's state is a single-model TrainState (with .params)."""
  returned = getattr(task_cls.init_state, "__annotations__", {}).get("return")
  return getattr(returned, "__name__", returned) == "TrainState"


def check(config: ml_collections.ConfigDict, task_cls) -> str | None:
  """The first problem with config.init_from and config.lora, as one sentence (nothing
  is read: the source run is opened when training starts)."""
  problem = lora.check(config)
  if problem:
    return problem
  if config.get("lora") is not None and config.lora.rank > 0:
    from practice_jax.tasks.classification import ClassificationTask
    from practice_jax.tasks.language_model import LanguageModelTask
    if not issubclass(task_cls, (ClassificationTask, LanguageModelTask)):
      return (f"config.lora adapts the models of the classification and language_model "
              f"tasks; task {config.task.name!r} does not apply it (set config.lora.rank=0).")
  section = _section(config)
  if section is None:
    return None
  if not single_model(task_cls):
    return (f"config.init_from takes the parameters of a single-model task; task "
            f"{config.task.name!r} keeps its models in a state of its own, so it cannot "
            f"start from another run (leave config.init_from.workdir empty).")
  if section.which not in ("best", "last"):
    return f"config.init_from.which={section.which!r} must be 'best' or 'last'."
  patterns = [("include", section.include)]
  for entry in section.rename:
    if len(entry) != 2 or not all(isinstance(x, str) for x in entry):
      return (f"config.init_from.rename has the entry {tuple(entry)!r}; give "
              f"(regex, replacement) pairs of strings.")
    patterns.append(("rename", entry[0]))
  for key, pattern in patterns:
    try:
      re.compile(pattern)
    except re.error as e:
      return (f"config.init_from.{key}={pattern!r} is not a valid regular expression "
              f"({e}).")
  return None


def _flat(tree: Any) -> dict[str, Any]:
  return {optim._path(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _fresh(workdir: str) -> bool:
  directory = os.path.join(workdir, CHECKPOINTS)
  return not (os.path.isdir(directory) and any(n.isdigit() for n in os.listdir(directory)))


def _load_source(section) -> tuple[Any, Any, int, str, list[str]]:
  """(source experiment, state, step, which checkpoint, notes)."""
  from practice_jax import train
  from practice_jax import workdir as workdir_lib
  source, notes = section.workdir, []
  if not os.path.isfile(os.path.join(source, workdir_lib.CONFIG_FILE)):
    raise UserError(f"config.init_from.workdir={source} holds no practice_jax run (no "
                    f"{workdir_lib.CONFIG_FILE}); pass the --workdir of a trained run.")
  which = section.which
  has = lambda name: not _fresh_dir(os.path.join(source, name))
  if which == "best" and not has(workdir_lib.BEST):
    notes.append(f"{source} has no best checkpoint; using its last one.")
    which = "last"
  if not has(workdir_lib.LAST if which == "last" else workdir_lib.BEST):
    raise UserError(f"config.init_from.workdir={source} has no checkpoint to start from; "
                    f"train that run first.")
  exp, state, step, which = train.load_trained(source, which)
  return exp, state, step, which, notes


def _fresh_dir(directory: str) -> bool:
  return not (os.path.isdir(directory) and any(n.isdigit() for n in os.listdir(directory)))


def _renamed(flat: dict[str, Any], section) -> dict[str, tuple[str, Any]]:
  """{renamed path: (source path, value)} of the included source entries."""
  include = re.compile(section.include) if section.include else None
  out = {}
  for path, value in flat.items():
    if include is not None and not include.search(path):
      continue
    new = path
    for pattern, replacement in section.rename:
      new = re.sub(pattern, replacement, new)
    out[new] = (path, value)
  return out


def _shape(x) -> tuple[int, ...]:
  return tuple(np.shape(x))


def transfer(section, target: Any, source_params: Any, source_model_state: dict,
             num_classes: int | None = None) -> tuple[Any, dict, dict]:
  """(params, model_state, summary): `target` (a TrainState) with the source's values
  where the renamed paths and shapes agree. Raises UserError for an include matching
  nothing or a shape mismatch other than the head's class count."""
  src_params = _flat(source_params)
  src_state = {name: _flat(tree) for name, tree in (source_model_state or {}).items()}
  params = _renamed(src_params, section)
  states = {name: _renamed(flat, section) for name, flat in src_state.items()}
  if section.include and not params and not any(states.values()):
    raise UserError(f"config.init_from.include={section.include!r} matches none of the "
                    f"source run's {len(src_params)} parameter paths (e.g. "
                    f"{', '.join(list(src_params)[:3])}).")
  mismatched, head = [], []

  def pick(flat_target: dict[str, Any], available: dict[str, tuple[str, Any]], prefix: str):
    taken, fresh = {}, []
    for path, value in flat_target.items():
      if path not in available:
        fresh.append(prefix + path)
        continue
      origin, src = available[path]
      a, b = _shape(src), _shape(value)
      if a == b:
        taken[path] = jnp.asarray(src, dtype=jnp.asarray(value).dtype)
      elif (a[:-1] == b[:-1] and len(a) == len(b) and num_classes is not None
            and b[-1] == num_classes):
        head.append(prefix + path)
      else:
        mismatched.append(f"{prefix}{path} (source {origin} {a}, here {b})")
    return taken, fresh

  flat_params = _flat(target.params)
  taken, fresh = pick(flat_params, params, "")
  taken_state, fresh_state = {}, []
  for name, tree in (target.model_state or {}).items():
    t, f = pick(_flat(tree), states.get(name, {}), name + "/")
    taken_state[name], fresh_state = t, fresh_state + f
  head_modules = {p.rsplit("/", 1)[0] for p in head}
  if len(head_modules) > 1:           # only one layer (the last Dense) may differ so
    mismatched += [f"{p} (class count)" for p in head]
    head = []
  if mismatched:
    raise UserError(
        f"config.init_from.workdir={section.workdir}: these parameters differ in shape "
        f"from this model's and are not the head's class count: {'; '.join(mismatched)}; "
        f"leave them out with config.init_from.include or map them with "
        f"config.init_from.rename.")

  def replace(tree, chosen):
    return jax.tree_util.tree_map_with_path(
        lambda p, leaf: chosen.get(optim._path(p), leaf), tree)
  new_params = replace(target.params, taken)
  new_state = {name: replace(tree, taken_state[name])
               for name, tree in (target.model_state or {}).items()}
  n_taken = sum(int(np.prod(_shape(v))) for v in taken.values())
  summary = {
      "tensors_taken": len(taken) + sum(len(t) for t in taken_state.values()),
      "params_taken": n_taken,
      "params_total": sum(int(np.prod(_shape(v))) for v in flat_params.values()),
      "reinitialised": head,
      "kept_fresh": fresh + fresh_state,
  }
  return new_params, new_state, summary


def start(exp, workdir: str, state: Any) -> Any:
  """The hook of train._train, before restoring: on a fresh start with
  config.init_from.workdir set, `state` with the source run's parameters; prints the
  trainable-parameter count when some are frozen or adapted."""
  config, task = exp.config, exp.task
  section = _section(config)
  stale = os.path.join(workdir, RECORD_FILE)
  if _fresh(workdir) and os.path.isfile(stale) and exp.parallel.is_main:
    os.remove(stale)                 # from an earlier start of this workdir
  if section is not None and _fresh(workdir):
    if os.path.abspath(section.workdir) == os.path.abspath(workdir):
      raise UserError("config.init_from.workdir is this run's own workdir; pass the workdir "
                      "of another, trained run.")
    src_exp, src_state, step, which, notes = _load_source(section)
    for note in notes:
      print(note)
    src_params = lora.merge(jax.device_get(src_state.params), src_exp.config)
    params, model_state, summary = transfer(
        section, jax.device_get(state), src_params, jax.device_get(src_state.model_state),
        getattr(task, "num_classes", None))
    opt_state = task.tx.init(params) if hasattr(task, "tx") else state.opt_state
    state = exp.parallel.put_state(state.replace(params=params, model_state=model_state,
                                                 opt_state=opt_state))
    record = {"workdir": os.path.abspath(section.workdir), "which": which, "step": step,
              "include": section.include, "rename": [list(r) for r in section.rename],
              **summary}
    if exp.parallel.is_main:
      os.makedirs(workdir, exist_ok=True)
      with open(os.path.join(workdir, RECORD_FILE), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
    print(f"Initialised from {section.workdir} ({which} checkpoint, step {step}): "
          f"{summary['tensors_taken']} tensors taken ({summary['params_taken']:,} of "
          f"{summary['params_total']:,} parameters), "
          f"{len(summary['reinitialised'])} re-initialised (new head: "
          f"{', '.join(summary['reinitialised']) or 'none'}), "
          f"{len(summary['kept_fresh'])} kept fresh"
          + (f" ({', '.join(summary['kept_fresh'][:6])}"
             + (", ..." if len(summary['kept_fresh']) > 6 else "") + ")"
             if summary['kept_fresh'] else "") + "; optimizer and step start fresh.")
  if hasattr(state, "params"):
    opt = config.optimizer
    adapters = lora.count(state.params)
    if opt.freeze or opt.get("unfreeze") or adapters:
      trained, total = optim.trainable_count(opt, state.params)
      print(f"Trainable parameters: {trained:,} of {total:,}"
            + (f" (LoRA adapters: {adapters:,}, rank {config.lora.rank})" if adapters else "")
            + ".")
  return state


def recorded(workdir: str) -> dict | None:
  """The init_from entry of the run record: what the run in `workdir` started from."""
  path = os.path.join(workdir, RECORD_FILE)
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)
