"""Run by tests/test_parallel.py in a subprocess with 8 simulated CPU devices: trains the
same steps on 1 device and on all 8 (batch sharded over a Mesh) and prints the largest
parameter difference. XLA_FLAGS must be set before jax is imported, hence a subprocess."""

import functools
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from practice_jax import optim
from practice_jax.config_base import base_config, model_config
from practice_jax.data.in_memory import ClassificationData
from practice_jax.parallel import DataParallel
from practice_jax.tasks.classification import ClassificationTask


def main() -> None:
  assert jax.device_count() == 8, jax.devices()
  rng = np.random.default_rng(0)
  split = {"image": rng.integers(0, 256, (256, 12, 12, 1), dtype=np.uint8),
           "label": rng.integers(0, 4, 256).astype(np.int32)}
  data = ClassificationData(split, None, split, 4, list("abcd"),
                            np.array([0.5], np.float32), np.array([0.3], np.float32))
  config = base_config()
  config.model = model_config("cnn", features=(8,), pools=("max",), batch_norm=True,
                              dense=(16,), dense_dropout=0.3)
  config.augment.crop_padding = 2
  config.augment.horizontal_flip = True
  config.schedule.name = "constant"
  config.eval_batch_size = 64
  task = ClassificationTask(config, data)
  tx = optim.build_optimizer(config.optimizer, optim.build_schedule(config.schedule, 1e-2, 8, 8))
  results = {}
  for n in (1, 8):
    parallel = DataParallel(jax.devices()[:n])
    chunk = parallel.compile_train_chunk(functools.partial(task.train_step, tx=tx),
                                         task.train_batch, batch_size=32)
    state = parallel.replicate(task.init_state(tx))
    train = parallel.replicate(task.train_data)
    perm = parallel.replicate(jnp.arange(256)[::-1])
    state, sums, _ = chunk(state, train, perm, 0, num_steps=4)
    state, sums, _ = chunk(state, train, perm, 4, num_steps=4)
    evaluate = parallel.compile_eval(task.eval_step, 64)
    results[n] = (jax.device_get(state), jax.device_get(sums),
                  jax.device_get(evaluate(state, parallel.replicate(task.eval_splits["test"]))))
  (s1, m1, e1), (s8, m8, e8) = results[1], results[8]
  diff = lambda a, b: max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
                          for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  print(json.dumps({"params": diff(s1.params, s8.params),
                    "batch_stats": diff(s1.model_state, s8.model_state),
                    "train_metrics": diff(m1, m8), "eval_metrics": diff(e1, e8),
                    "steps": int(s8.step)}))


if __name__ == "__main__":
  sys.exit(main())
