"""The pure steps of the classification and language-model tasks, against hand
computations: what they update, what they report, what they draw at random, what data
they see."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import array_task, image_info, load_config
from practice_jax import optim
from practice_jax.data import text
from practice_jax.data.in_memory import epoch_permutation
from practice_jax.parallel import DataParallel
from practice_jax.state import DATA_STREAM, stream_key
from practice_jax.tasks.language_model import LanguageModelTask

PLAN = optim.Plan(total_steps=100, steps_per_epoch=10)


def _splits(n_train=40, n_test=10, seed=0, size=8):
  rng = np.random.default_rng(seed)
  def split(n):
    return {"image": rng.integers(0, 256, (n, size, size, 1), dtype=np.uint8),
            "label": rng.integers(0, 3, n).astype(np.int32)}
  return split(n_train), {"test": split(n_test)}


def _task(n_train=40, n_test=10, optimizer="adamw", size=8, **model):
  train, evals = _splits(n_train, n_test, size=size)
  config = load_config("mnist")
  config.model.update({"features": (4,), "pools": ("avg",), "dense": (8,), **model})
  config.eval_batch_size = 4
  config.schedule.name = "constant"
  config.optimizer.name = optimizer
  config.optimizer.learning_rate = 0.1 if optimizer == "sgd" else 1e-2
  if optimizer == "sgd":
    config.optimizer.momentum = 0.0
  return array_task(config, train, evals, image_info(3, (size, size, 1))), train


def _single_steps(task, train, steps):
  """The state after `steps` jitted train steps of batch 8 on the first epoch's order
  (batch i = examples perm[8i : 8i + 8]), from the initial state."""
  state = task.init_state(PLAN)
  perm = np.asarray(epoch_permutation(stream_key(0, DATA_STREAM), 0, 40))
  step = jax.jit(task.train_step)
  for i in range(steps):
    state, _ = step(state, jax.tree.map(lambda a: a[perm[8 * i:8 * i + 8]], train))
  return state


def test_train_step_is_a_pure_function_of_state_and_batch():
  task, train = _task(dense_dropout=0.5)
  state = task.init_state(PLAN)
  before = jax.tree.map(np.array, state)
  batch = jax.tree.map(lambda a: a[:8], train)
  jitted = jax.jit(chex.assert_max_traces(task.train_step, n=1))
  new_state, metrics = jitted(state, batch)
  eager, eager_metrics = task.train_step(state, batch)        # no tracing, same numbers
  chex.assert_trees_all_close(new_state.params, eager.params, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(metrics, eager_metrics, rtol=1e-5)
  chex.assert_trees_all_equal(jax.tree.map(np.array, state), before)   # input untouched
  chex.assert_trees_all_equal_shapes_and_dtypes(state, new_state)
  assert int(new_state.step) == 1 and float(metrics["count"]) == 8
  assert not np.allclose(new_state.params["Dense_1"]["kernel"],
                         state.params["Dense_1"]["kernel"])
  for _ in range(3):              # no retracing as the step counter advances
    new_state, _ = jitted(new_state, batch)
  assert int(new_state.step) == 4


def test_dropout_masks_change_with_the_step_and_repeat_for_the_same_step():
  task, train = _task(dense_dropout=0.5)
  state = task.init_state(PLAN)
  batch = jax.tree.map(lambda a: a[:8], train)
  step = jax.jit(task.train_step)
  a, _ = step(state.replace(step=jnp.int32(5)), batch)
  b, _ = step(state.replace(step=jnp.int32(5)), batch)
  c, _ = step(state.replace(step=jnp.int32(6)), batch)
  chex.assert_trees_all_equal(a.params, b.params)
  assert not np.allclose(a.params["Dense_0"]["kernel"], c.params["Dense_0"]["kernel"])


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_the_update_is_sgd_on_the_label_smoothed_loss_and_reports_plain_cross_entropy(
    smoothing):
  task, train = _task(optimizer="sgd")
  task.config.task.label_smoothing = smoothing
  task.config.optimizer.no_decay = ""
  state = task.init_state(PLAN)
  batch = jax.tree.map(lambda a: a[:8], train)
  new_state, sums = task.train_step(state, batch)

  def loss(params, smooth):
    logits = task.logits(state.replace(params=params), batch["image"])
    targets = optax.smooth_labels(jax.nn.one_hot(batch["label"], 3), smooth)
    return optax.softmax_cross_entropy(logits, targets).mean()
  expected = jax.tree.map(lambda p, g: p - 0.1 * g, state.params,
                          jax.grad(loss)(state.params, smoothing))
  chex.assert_trees_all_close(new_state.params, expected, rtol=1e-5, atol=1e-6)
  reported = float(sums["loss_sum"]) / float(sums["count"])
  assert reported == pytest.approx(float(loss(state.params, 0.0)), rel=1e-5)


def test_a_chunk_of_steps_on_the_sources_batches_equals_single_steps_in_the_epochs_order():
  task, train = _task()
  parallel = DataParallel()
  task.source.bind(parallel)
  chunk = parallel.compile_train_chunk(task.train_step, batch_size=8)
  state = parallel.replicate(task.init_state(PLAN))
  manual = _single_steps(task, train, 4)
  state, sums, finite = chunk(state, task.source.batches(0, 2, 8), 2)
  state, sums, finite = chunk(state, task.source.batches(2, 2, 8), 2)
  assert bool(finite)
  chex.assert_trees_all_close(state.params, manual.params, rtol=1e-5, atol=1e-6)
  assert float(sums["count"]) == 16
  assert chunk._cache_size() == 1
  second_epoch = np.asarray(task.source.batches(5, 1, 8)["label"][0])
  perm1 = np.asarray(epoch_permutation(stream_key(0, DATA_STREAM), 1, 40))
  np.testing.assert_array_equal(second_epoch, train["label"][perm1[:8]])


def test_a_cpu_chunk_of_eigen_convolutions_compiles_without_ynnpack_convolutions():
  # Every convolution takes conv_impl "eigen" (more than 16 channels): the chunk is traced
  # under conv.no_ynn_convolutions (no extra rows) and compiled with XLA's YNNPACK
  # convolutions off; it trains as single steps jitted the usual way do. With XLA's own
  # convolutions nothing changes; with both (pytest's "auto" on 21x21 images: conv1 "xla",
  # conv2 "eigen") the step is traced again as it is.
  from practice_jax.models import conv
  for impl, options, size in (("eigen", conv.NO_YNN_CONVOLUTIONS, 8), ("xla", None, 8),
                              ("auto", None, 21)):
    task, train = _task(features=(20, 24), pools=("none", "max"), padding="VALID",
                        conv_impl=impl, size=size)
    parallel = DataParallel()
    task.source.bind(parallel)
    chunk = parallel.compile_train_chunk(task.train_step, batch_size=8, unroll=True)
    state = parallel.replicate(task.init_state(PLAN))
    manual = _single_steps(task, train, 3)
    state, _, _ = chunk(state, task.source.batches(0, 2, 8), 2)
    state, _, _ = chunk(state, task.source.batches(2, 1, 8), 1)
    assert chunk.compiler_options() == options and chunk._cache_size() == 2
    chex.assert_trees_all_close(state.params, manual.params, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("unroll", [False, True])
def test_a_chunk_traces_the_train_step_once_and_reuses_that_trace_for_the_flop_count(unroll):
  from practice_jax import flops
  task, _ = _task()
  parallel = DataParallel()
  task.source.bind(parallel)
  traces = []

  def counted(state, batch):
    traces.append(1)
    return task.train_step(state, batch)
  chunk = parallel.compile_train_chunk(counted, batch_size=8, unroll=unroll)
  state = parallel.replicate(task.init_state(PLAN))
  batches = task.source.batches(0, 3, 8)
  state, sums, _ = chunk(state, batches, 3)
  assert float(sums["count"]) == 24
  assert len(traces) == 1          # metrics' structure, scan body or 3 unrolled steps
  counted_again = flops.step_flops(counted, state, batches, 8, chunk.traced())
  assert len(traces) == 1
  assert counted_again == flops.step_flops(task.train_step, state, batches, 8) > 0


def test_evaluation_counts_every_example_once_and_ignores_the_padding():
  task, _ = _task(n_test=10)   # 10 examples, batches of 4: the last batch is padded
  state = task.init_state(PLAN)
  metrics = task.evaluators()["test"].run(state)
  test = task.source.eval_splits["test"]
  logits = task.logits(state, jnp.asarray(test["image"]))
  expected_loss = optax.softmax_cross_entropy_with_integer_labels(logits, test["label"])
  assert metrics["accuracy"] == pytest.approx(np.mean(np.argmax(logits, -1) == test["label"]))
  assert metrics["loss"] == pytest.approx(float(expected_loss.mean()), rel=1e-5)
  from practice_jax.tasks.base import pad_for_eval
  padded = pad_for_eval(test, 4)
  padded["label"][10:] = 2                     # garbage in the padding changes nothing
  padded["image"][10:] = 255
  sums = task.eval_step(state, padded)
  assert float(sums["count"]) == 10
  assert float(sums["loss_sum"]) / 10 == pytest.approx(metrics["loss"], rel=1e-5)


# -- language model -----------------------------------------------------------------------

TEXT = "hello world, jax is fun! " * 8
VOCAB = text.Vocabulary.from_text(TEXT)


def _lm(model="gpt"):
  config = load_config("shakespeare_gpt_cpu" if model == "gpt" else "shakespeare_lstm")
  config.data.block_size = 16
  if model == "gpt":
    config.model.update({"num_layers": 1, "embed_dim": 16, "num_heads": 2})
  else:
    config.model.update({"hidden": 16, "embed_dim": 8})
  config.schedule.name = "constant"
  config.optimizer.name, config.optimizer.momentum = "sgd", 0.0
  config.optimizer.weight_decay = config.optimizer.grad_clip_norm = 0.0
  config.optimizer.learning_rate = 0.1
  config.eval_batch_size = 4
  tokens = VOCAB.encode(TEXT)
  source = text.windows_source(tokens, {"validation": tokens[:100]}, VOCAB, 16, 0, seed=0)
  return LanguageModelTask(config, source, DataParallel())


def _next_char_loss(task, state, tokens):
  logits = task.logits(state, tokens[:, :-1])
  return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])


@pytest.mark.parametrize("model", ["gpt", "lstm"])
def test_language_model_steps_predict_the_next_character(model):
  task = _lm(model)
  state = task.init_state(PLAN)
  tokens = jnp.asarray(task.source.eval_splits["validation"]["tokens"])   # [6, 17]
  expected = _next_char_loss(task, state, tokens)
  new_state, sums = task.train_step(state, {"tokens": tokens})
  assert float(sums["loss_sum"]) == pytest.approx(float(expected.sum()), rel=1e-5)
  assert float(sums["count"]) == tokens.shape[0] * 16
  grads = jax.grad(lambda p: _next_char_loss(task, state.replace(params=p), tokens).mean())(
      state.params)
  chex.assert_trees_all_close(new_state.params, jax.tree.map(
      lambda p, g: p - 0.1 * g, state.params, grads), rtol=1e-5, atol=1e-6)
  metrics = task.evaluators()["validation"].run(state)       # 6 windows, padded to 8
  assert metrics["loss"] == pytest.approx(float(expected.mean()), rel=1e-5)
  assert metrics["bits_per_char"] == pytest.approx(metrics["loss"] / np.log(2))


def test_language_model_windows_start_at_the_epochs_offsets():
  task = _lm()
  task.source.bind(DataParallel())
  tokens = VOCAB.encode(TEXT)
  n = len(tokens) - 16
  assert task.source.num_train_examples == n
  perm = np.asarray(epoch_permutation(stream_key(0, DATA_STREAM), 0, n))
  batch = np.asarray(task.source.batches(1, 1, 4)["tokens"][0])
  for row, start in zip(batch, perm[4:8]):
    np.testing.assert_array_equal(row, tokens[start:start + 17])
