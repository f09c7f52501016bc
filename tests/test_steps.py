import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np

from conftest import load_config
from practice_jax import optim
from practice_jax.data.in_memory import ClassificationData
from practice_jax.parallel import DataParallel
from practice_jax.tasks.classification import ClassificationTask


def _task(n_train=40, n_test=10, **model):
  rng = np.random.default_rng(0)
  def split(n):
    return {"image": rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8),
            "label": rng.integers(0, 3, n).astype(np.int32)}
  data = ClassificationData(split(n_train), None, split(n_test), 3, ["a", "b", "c"],
                            np.array([0.5], np.float32), np.array([0.25], np.float32))
  config = load_config("mnist")
  config.model.update({"features": (4,), "pools": ("avg",), "dense": (8,), **model})
  config.eval_batch_size = 4
  config.schedule.name = "constant"
  task = ClassificationTask(config, data)
  tx = optim.build_optimizer(config.optimizer, optim.build_schedule(
      config.schedule, 1e-2, total_steps=100, steps_per_epoch=10))
  return task, tx


def test_train_step_is_pure_and_updates_the_state():
  task, tx = _task(dense_dropout=0.5)
  state = task.init_state(tx)
  batch = jax.tree.map(lambda a: a[:8], task.train_data)
  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(state, batch):
    return task.train_step(state, batch, tx)

  new_state, metrics = step(state, batch)
  again, _ = step(state, batch)   # same inputs, same outputs: no hidden state
  chex.assert_trees_all_equal(new_state.params, again.params)
  chex.assert_trees_all_equal_shapes_and_dtypes(state.params, new_state.params)
  assert int(new_state.step) == 1
  assert not np.allclose(new_state.params["Dense_1"]["kernel"], state.params["Dense_1"]["kernel"])
  assert float(metrics["count"]) == 8 and np.isfinite(float(metrics["loss_sum"]))
  for _ in range(3):              # no retracing as the step counter advances
    new_state, _ = step(new_state, batch)
  assert int(new_state.step) == 4


def test_train_chunk_equals_single_steps_and_compiles_once():
  task, tx = _task()
  parallel = DataParallel()
  data = parallel.replicate(task.train_data)
  perm = jnp.arange(40)
  chunk = parallel.compile_train_chunk(functools.partial(task.train_step, tx=tx),
                                       task.train_batch, batch_size=8)
  state = parallel.replicate(task.init_state(tx))
  manual = task.init_state(tx)
  step = jax.jit(functools.partial(task.train_step, tx=tx))
  for i in range(4):
    manual, _ = step(manual, task.train_batch(task.train_data, perm, i, 8))
  state, sums, finite = chunk(state, data, perm, 0, num_steps=2)
  state, sums, finite = chunk(state, data, perm, 2, num_steps=2)
  assert bool(finite)
  chex.assert_trees_all_close(state.params, manual.params, rtol=1e-5, atol=1e-6)
  assert float(sums["count"]) == 16
  assert chunk._cache_size() == 1


def test_eval_counts_every_example_exactly_once():
  task, tx = _task(n_test=10)   # 10 examples, batches of 4: the last batch is padded
  state = task.init_state(tx)
  evaluate = DataParallel().compile_eval(task.eval_step, batch_size=4)
  sums = evaluate(state, task.eval_splits["test"])
  assert float(sums["count"]) == 10
  logits = task.logits(state, jnp.asarray(task.data.test["image"]))
  expected = np.mean(np.argmax(logits, -1) == task.data.test["label"])
  assert task.summarize(sums)["accuracy"] == expected
