"""The config every experiment starts from, assembled from the sections its parts own.

``base_config(task, data, model)`` takes each part's own section with its defaults:
``config.task`` from the task (tasks/), ``config.data`` from the data source (data/),
``config.model`` from the model (models/), ``config.optimizer`` and ``config.schedule``
from optim.py; the keys below belong to the loop. So every key a user can override with
``--config.key=value`` exists, with a sensible default, and each part checks its own
section before anything is loaded (validation.py).
"""

from __future__ import annotations

import difflib

import ml_collections

# Keys that moved when each part took over its own section: old name -> new name.
MOVED_KEYS = {
    "task": "task.name",
    "label_smoothing": "task.label_smoothing",
    "augment": "task.augment",
    "sampling": "task.sampling",
}


def unknown_key(config, key: str) -> str:
  """One sentence for an unknown --config.KEY: where the key moved, or the closest keys
  at any level (a key given at the wrong level is found by its last part)."""
  head = key.split(".")[0]
  if head in MOVED_KEYS:
    moved = MOVED_KEYS[head] + key[len(head):] if head != "task" else MOVED_KEYS[head]
    return f"config.{key} has moved: use config.{moved}."

  def paths(node, prefix=""):
    for name in node.keys():
      path = prefix + name
      yield path
      if hasattr(node[name], "keys"):
        yield from paths(node[name], path + ".")
  known = list(paths(config))
  last = {p: p.rsplit(".", 1)[-1] for p in known}
  matches = difflib.get_close_matches(key, known, n=2, cutoff=0.75)
  matches += [p for p in known if p not in matches and last[p] in
              difflib.get_close_matches(key.rsplit(".", 1)[-1], set(last.values()), n=1,
                                        cutoff=0.75)]
  hint = (f"did you mean {' or '.join('config.' + m for m in matches[:2])}?" if matches
          else "see the config file and practice_jax/config_base.py for every key.")
  return f"Unknown config key config.{key}: {hint}"


def model_config(name: str, **settings) -> ml_collections.ConfigDict:
  """config.model for model `name`: every setting of the model with its default, so each
  can be overridden from the command line, updated with `settings`."""
  from practice_jax import models  # imports flax: only when a config asks for a model
  from practice_jax.models import generative
  if name in generative.DEFAULTS:   # the generative tasks' models (their own registry)
    return generative.model_config(name, **settings)
  values = models.defaults(name)
  unknown = sorted(set(settings) - set(values))
  if unknown:
    raise ValueError(f"model {name!r} has no settings {unknown}; it has {sorted(values)}")
  values.update(settings)
  return ml_collections.ConfigDict({"name": name, **values})


def data_config(name: str, **settings) -> ml_collections.ConfigDict:
  from practice_jax import data
  return data.data_config(name, **settings)


def task_config(name: str, **settings) -> ml_collections.ConfigDict:
  from practice_jax import tasks
  return tasks.task_config(name, **settings)


def base_config(task: str = "classification", data: str = "mnist", model: str = "cnn"
                ) -> ml_collections.ConfigDict:
  from practice_jax import optim
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = task_config(task)
  c.data = data_config(data)
  c.model = model_config(model)
  c.optimizer = optim.optimizer_config()
  c.schedule = optim.schedule_config()

  # Early stopping on an evaluated metric ('validation/accuracy', or just 'accuracy' for
  # the validation one; '' = the task's default): stop after `patience` evaluations
  # without improvement (evaluations happen every epoch, or every eval_every_steps). 0 =
  # off. The metric's direction (higher or lower is better) comes from the task.
  c.early_stopping = ml_collections.ConfigDict()
  c.early_stopping.patience = 0
  c.early_stopping.metric = ""
  c.early_stopping.min_delta = 0.0       # improvements smaller than this do not count
  # Which checkpoint the final metrics and reports use: "last", or "best" (the best value
  # of early_stopping.metric, kept in <workdir>/best_checkpoint).
  c.evaluate_checkpoint = "last"
  # What counts as success, e.g. 'validation/accuracy>=0.99' (several: comma-separated);
  # the ledger records whether and when a run met it ('' = none). See ledger.py.
  c.target = ""

  c.batch_size = 128                     # global batch, split over all devices
  c.num_epochs = 10.0
  c.num_steps = 0                        # when > 0, train this many steps instead of epochs
  c.eval_every_steps = 0                 # evaluate every N steps; 0 = at every epoch end
  c.eval_batch_size = 1000
  # Train steps compiled into one call: a lax.scan; on CPU, unrolled for models with
  # convolutions (XLA:CPU runs those slowly inside loops), so compile time grows with it.
  c.steps_per_dispatch = 10
  c.log_every_steps = 100
  c.checkpoint_every_steps = 1000        # also at every epoch end and at the end
  c.keep_checkpoints = 3
  c.plots = True                         # write PNG learning curves, confusion matrices
  # Model FLOPs utilisation in the progress line and run.json (flops.py): XLA's FLOP
  # count of one train step against the devices' peak: peak_flops per device if > 0,
  # else the known GPU/TPU bf16 peak, or on a CPU its measured fp32 matmul rate.
  c.count_flops = True
  c.peak_flops = 0.0

  # How the steps run over the devices (practice_jax/parallel.py). config.batch_size is
  # the global batch over all devices of all processes.
  c.parallel = ml_collections.ConfigDict()
  c.parallel.mode = "jit"                # jit (a device Mesh, the default) | pmap
  # (data, fsdp) devices; -1 = all the others. With fsdp > 1, every state array of at
  # least fsdp_min_size elements is split over the fsdp devices (jit mode only).
  c.parallel.mesh_shape = (-1, 1)
  c.parallel.fsdp_min_size = 2 ** 18

  # Transfer learning (practice_jax/transfer.py): a fresh run starts from another run's
  # parameters (and batch-norm statistics) where paths and shapes agree; the optimizer
  # state and the step start fresh. A head whose class count differs is re-initialised.
  c.init_from = ml_collections.ConfigDict()
  c.init_from.workdir = ""               # that run's workdir ('' = off)
  c.init_from.which = "best"             # its 'best' checkpoint (else its last) or 'last'
  c.init_from.include = ""               # regex on its parameter paths ('' = all)
  # ((regex, replacement), ...) applied with re.sub to its paths, in order, before they
  # are matched to this model's paths.
  c.init_from.rename = ()
  # LoRA adapters on Dense kernels (practice_jax/lora.py); rank 0 = off.
  from practice_jax import lora
  c.lora = lora.lora_config()
  return c


def upgrade(old: dict) -> dict:
  """A config.json written before the parts owned their sections, in today's layout (so
  evaluate, predict and sample read older runs)."""
  if isinstance(old.get("task"), dict):
    return old
  new = dict(old)
  task = {"name": new.pop("task", "classification")}
  for key in ("label_smoothing", "augment", "sampling"):
    if key in new:
      task[key] = new.pop(key)
  new["task"] = task
  data = dict(new.get("data", {}))
  if task["name"] == "classification":
    data.pop("block_size", None)
    data.pop("eval_windows", None)
    task.pop("sampling", None)
  else:
    data.pop("validation_size", None)
    task.pop("label_smoothing", None)
    task.pop("augment", None)
  new["data"] = data
  if new.get("early_stopping", {}).get("metric") in ("accuracy", "loss"):
    new["early_stopping"] = {**new["early_stopping"],
                             "metric": "validation/" + new["early_stopping"]["metric"]}
  return new
