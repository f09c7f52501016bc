"""Run by tests/test_parallel.py in a subprocess with 8 simulated CPU devices: trains the
same 8 steps on 1 device and on all 8 in each parallel layout (jit over a data mesh, pmap,
jit over a data x fsdp mesh), for an image classifier (batch norm, dropout, augmentation)
and a character GPT (dropout; with AdamW and with Muon), and prints, per task and layout,
the largest difference from the single-device run. XLA_FLAGS must be set before jax is
imported, hence a subprocess."""

import json
import sys

import jax
import numpy as np

from practice_jax import optim
from practice_jax.config_base import base_config, model_config
from practice_jax.data import text
from practice_jax.data.in_memory import ArraySource
from practice_jax.parallel import DataParallel
from practice_jax.tasks.classification import ClassificationTask
from practice_jax.tasks.language_model import LanguageModelTask

LAYOUTS = {
    "one_device": dict(n=1, mode="jit", mesh=(-1, 1)),
    "jit": dict(n=8, mode="jit", mesh=(-1, 1)),
    "pmap": dict(n=8, mode="pmap", mesh=(-1, 1)),
    "fsdp": dict(n=8, mode="jit", mesh=(2, 4)),
}


def classifier(parallel, mode):
  rng = np.random.default_rng(0)
  split = {"image": rng.integers(0, 256, (256, 12, 12, 1), dtype=np.uint8),
           "label": rng.integers(0, 4, 256).astype(np.int32)}
  info = {"num_classes": 4, "class_names": list("abcd"), "image_shape": [12, 12, 1],
          "mean": [0.5], "std": [0.3]}
  config = base_config()
  config.model = model_config("cnn", features=(8,), pools=("max",), batch_norm=True,
                              dense=(16,), conv_dropout=0.2, dense_dropout=0.3)
  config.task.augment.crop_padding = 2
  config.task.augment.horizontal_flip = True
  config.eval_batch_size = 64
  # The same seed gives every layout the same batches (one epoch of 8 steps of 32).
  return config, ArraySource(split, {"test": split}, info, config.seed), ClassificationTask


def language_model(parallel, mode):
  corpus = "the quick brown fox jumps over the lazy dog; " * 40
  vocab = text.Vocabulary.from_text(corpus)
  tokens = vocab.encode(corpus)
  config = base_config("language_model", "tiny_shakespeare")
  config.data.block_size = 16
  config.model = model_config("gpt", num_layers=1, num_heads=2, embed_dim=16, dropout=0.2)
  config.eval_batch_size = 64
  source = text.windows_source(tokens[:32 * 8 + 16], {"test": tokens}, vocab, 16, 0,
                               config.seed)
  return config, source, LanguageModelTask


def language_model_muon(parallel, mode):
  """The GPT trained with Muon: its same-shape matrices stacked into one iteration,
  sharded over the fsdp axis in that layout."""
  config, source, task_class = language_model(parallel, mode)
  config.optimizer.name = "muon"
  return config, source, task_class


def run(make, name, layout):
  parallel = DataParallel(jax.devices()[:layout["n"]], mode=layout["mode"],
                          mesh=layout["mesh"], fsdp_min_size=64)
  config, source, task_class = make(parallel, layout["mode"])
  config.schedule.name = "constant"
  config.optimizer.learning_rate = 1e-2
  config.parallel.mode = layout["mode"]
  task = task_class(config, source, parallel)
  state = parallel.put_state(task.init_state(optim.Plan(total_steps=8, steps_per_epoch=8)))
  source.bind(parallel)
  chunk = parallel.compile_train_chunk(task.train_step, batch_size=32,
                                       unroll=task.unroll_on_cpu)
  state, sums, _ = chunk(state, source.batches(0, 4, 32), 4)
  state, sums, finite = chunk(state, source.batches(4, 4, 32), 4)
  assert bool(finite), name
  # How many parameter arrays the fsdp axis split (the others are replicated).
  sharded = sum(not leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(state.params))
  evaluate = task.evaluators()["test"].run    # the whole split, batches of 64
  return (jax.device_get(state), jax.device_get(sums), evaluate(state)), sharded


def main() -> None:
  assert jax.device_count() == 8, jax.devices()

  def diff(a, b):
    return max([float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)] + [0.0])
  out = {}
  for kind, make in (("classification", classifier), ("language_model", language_model),
                     ("language_model_muon", language_model_muon)):
    results = {name: run(make, name, layout) for name, layout in LAYOUTS.items()}
    (s1, m1, e1), _ = results["one_device"]
    out[kind] = {name: {"params": diff(s1.params, s.params),
                        "opt_state": diff(s1.opt_state, s.opt_state),
                        "batch_stats": diff(s1.model_state, s.model_state),
                        "train_metrics": diff(m1, m), "eval_metrics": diff(e1, e),
                        "steps": int(s.step), "sharded_params": sharded}
                 for name, ((s, m, e), sharded) in results.items()}
  print(json.dumps(out))


if __name__ == "__main__":
  sys.exit(main())
