"""Compression: gradual and one-shot magnitude pruning (pruning.py), int8 post-training
quantization (quantize.py, qwix when installed), knowledge distillation
(tasks/distillation.py) and the compress command (compress.py), on tiny models and mock
data."""

import json
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import array_task, checkpointed_state, image_info, killed_copy, load_config, tiny
from practice_jax import compress, optim, pruning, quantize, train
from practice_jax.config_base import base_config, model_config
from practice_jax.errors import UserError
from practice_jax.tasks.distillation import distillation_loss
from practice_jax.validation import validate


def _params(key=0):
  k = jax.random.split(jax.random.key(key), 3)
  return {"Conv_0": {"kernel": jax.random.normal(k[0], (3, 3, 2, 4)), "bias": jnp.ones(4)},
          "Dense_0": {"kernel": jax.random.normal(k[1], (36, 10)), "bias": jnp.ones(10)},
          "Dense_1": {"kernel": jax.random.normal(k[2], (10, 3)), "bias": jnp.ones(3)}}


def _zeros(params):
  return {name: int(np.sum(np.asarray(layer["kernel"]) == 0)) for name, layer in params.items()}


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_one_shot_masks_zero_exactly_the_smallest_fraction(scope):
  params = _params()
  masks = pruning.magnitude_masks(params, 0.7, scope)
  pruned = pruning.apply_masks(params, masks)
  sizes = {name: layer["kernel"].size for name, layer in params.items()}
  zeros = _zeros(pruned)
  if scope == "layer":
    assert zeros == {name: round(0.7 * n) for name, n in sizes.items()}
  else:
    assert sum(zeros.values()) == round(0.7 * sum(sizes.values()))
    kept = np.concatenate([np.abs(np.asarray(l["kernel"])).ravel() for l in pruned.values()])
    every = np.concatenate([np.abs(np.asarray(l["kernel"])).ravel() for l in params.values()])
    assert kept[kept > 0].min() >= np.sort(every)[sum(zeros.values()) - 1]
  for name in params:                          # biases are never pruned
    chex.assert_trees_all_equal(pruned[name]["bias"], params[name]["bias"])
  assert masks["Dense_0"]["bias"] is None
  chex.assert_trees_all_equal(pruning.apply_masks(params, pruning.magnitude_masks(params, 0.0)),
                              params)
  # Ties are broken by position: the count is exact even when every weight is equal.
  ones = jax.tree.map(jnp.ones_like, params)
  assert sum(_zeros(pruning.apply_masks(ones, pruning.magnitude_masks(ones, 0.5))).values()
             ) == round(0.5 * sum(sizes.values()))


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_gradual_pruning_reaches_the_target_and_pruned_weights_stay_zero(scope):
  params, target, end = _params(1), 0.8, 12
  tx = optax.chain(optax.adamw(1e-2, weight_decay=1e-2),
                   pruning.gradual(target, start_step=2, end_step=end, every=3, scope=scope))
  opt_state = tx.init(params)
  schedule = pruning.cubic_schedule(target, 2, end)

  @jax.jit
  def step(params, opt_state, key):
    grads = jax.tree.map(lambda p: jax.random.normal(key, p.shape), params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  n = sum(layer["kernel"].size for layer in params.values())
  seen_zero = jax.tree.map(lambda p: np.zeros(p.shape, bool), params)
  for i in range(20):
    params, opt_state = step(params, opt_state, jax.random.key(i))
    now_zero = jax.tree.map(lambda p: np.asarray(p) == 0, params)
    # Once pruned, always zero (exactly), whatever the optimizer and weight decay do.
    jax.tree.map(lambda before, now: np.testing.assert_array_equal(now[before], True),
                 seen_zero, now_zero)
    seen_zero = now_zero
    if i in (2, 5, 8, 11):                    # mask updates: exactly the scheduled count
      expected = float(schedule(i))
      if scope == "global":
        assert sum(_zeros(params).values()) == round(expected * n)
      else:
        assert _zeros(params) == {k: round(expected * l["kernel"].size)
                                  for k, l in params.items()}
  assert float(schedule(end)) == pytest.approx(target)
  assert pruning.sparsity(params)["total"] == pytest.approx(target, abs=0.01)
  assert all(np.all(np.asarray(l["bias"]) != 0) for l in params.values())


def _tiny_mnist(epochs=1.0):
  config = tiny(load_config("mnist"), epochs=epochs)
  config.plots = False
  config.model.features, config.model.pools, config.model.dense = (4,), ("avg",), (8,)
  return config


def test_a_pruned_run_resumes_bitwise_with_its_masks(mock_tfds, tmp_path):
  config = tiny(load_config("mnist_pruned"), epochs=1.0)        # 6 steps
  config.model = model_config("mlp", hidden=(16,))
  config.optimizer.prune_every = 2
  config.checkpoint_every_steps = 2
  config.keep_checkpoints = 20
  config.plots = False
  full = train.train_and_evaluate(config, str(tmp_path / "full"))
  killed_copy(tmp_path / "full", tmp_path / "resumed", after_step=2)   # mid-pruning
  resumed = train.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert resumed["final"] == full["final"]
  a = checkpointed_state(config, tmp_path / "full")
  b = checkpointed_state(config, tmp_path / "resumed")
  chex.assert_trees_all_equal(a, b)                  # parameters, masks, counters
  assert pruning.sparsity(a.params)["total"] == pytest.approx(0.9, abs=0.002)


def test_int8_weights_are_within_half_a_step_and_logits_stay_close():
  w = np.asarray(jax.random.normal(jax.random.key(0), (3, 3, 4, 6))) * np.arange(1, 7)
  q, scale = quantize.quantize_int8(w)
  assert q.dtype == np.int8 and scale.shape == (1, 1, 1, 6)
  assert np.all(np.abs(quantize.dequantize_int8(q, scale) - w) <= scale / 2 + 1e-7)
  assert np.all(np.abs(q).max(axis=(0, 1, 2)) == 127)          # each channel's range used

  config = _tiny_mnist()
  config.model.conv_impl = "eigen"                 # the project's own Conv module
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (32, 8, 8, 1), dtype=np.uint8)
  labels = rng.integers(0, 3, 32).astype(np.int32)
  task = array_task(config, {"image": images, "label": labels}, info=image_info(3, (8, 8, 1)))
  state = task.init_state(optim.Plan(10, 5))
  reference = np.asarray(quantize.float_logits(task, state)(images))
  quantized, dequantized = quantize.int8_weights(quantize.plain_params(task, state))
  assert quantized["Conv_0"]["kernel"]["q"].dtype == np.int8
  assert quantize.size_bytes(quantized) < 0.3 * quantize.size_bytes(state.params)
  ours = np.asarray(quantize.float_logits(task, state, dequantized)(images))
  spread = np.abs(reference).max()
  np.testing.assert_allclose(ours, reference, atol=0.02 * spread)
  if not quantize.qwix_available():
    pytest.skip("qwix is not installed (pip install -e '.[compress]'): its modes untested")
  for mode in ("w8", "w8a8", "w8a8_static"):
    fn, params = quantize.qwix_quantize(task, state, mode, calibration=images)
    logits = np.asarray(fn(images))
    assert quantize.size_bytes(params) < 0.3 * quantize.size_bytes(state.params)
    if mode == "w8a8_static":   # fixed scales (qwix: the batch's mean absmax) clip outliers
      assert np.all(np.isfinite(logits)) and any(
          "_scale" in "/".join(map(str, path))
          for path, _ in jax.tree_util.tree_leaves_with_path(params))
    else:
      np.testing.assert_allclose(logits, reference, atol=0.05 * spread)


def test_the_distillation_loss_is_hintons_and_never_reaches_the_teacher():
  student = jnp.array([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
  teacher = jnp.array([[4.0, 1.0, 0.0], [-1.0, 2.0, 2.5]])
  labels = jnp.array([0, 2])
  targets = jax.nn.one_hot(labels, 3)
  t, alpha = 2.0, 0.7

  def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)
  p, q = softmax(np.asarray(teacher) / t), softmax(np.asarray(student) / t)
  kl = np.sum(p * np.log(p / q), -1)
  ce = -np.log(softmax(np.asarray(student))[np.arange(2), np.asarray(labels)])
  expected = alpha * t ** 2 * kl + (1 - alpha) * ce
  np.testing.assert_allclose(distillation_loss(student, teacher, targets, t, alpha),
                             expected, rtol=1e-5)
  np.testing.assert_allclose(distillation_loss(student, teacher, targets, t, 0.0), ce,
                             rtol=1e-5)
  loss = lambda s, te: distillation_loss(s, te, targets, t, alpha).mean()
  g_student, g_teacher = jax.grad(loss, argnums=(0, 1))(student, teacher)
  chex.assert_trees_all_equal(g_teacher, jnp.zeros_like(teacher))
  assert float(jnp.abs(g_student).sum()) > 0


def test_a_trained_run_prunes_quantizes_and_teaches(mock_tfds, tmp_path):
  teacher_dir = str(tmp_path / "teacher")
  teacher_config = _tiny_mnist()
  teacher_config.model = model_config("mlp", hidden=(16,))
  teacher = train.train_and_evaluate(teacher_config, teacher_dir)
  dense = teacher["final"]["test"]["accuracy"]

  table = compress.run_prune(teacher_dir, None, [0.0, 0.5], ["global", "layer"])
  assert table["dense"]["accuracy"] == dense
  for row in table["pruned"]:
    if row["sparsity"] == 0.0:
      assert row["accuracy"] == dense and row["loss"] == table["dense"]["loss"]
    else:
      assert row["kernel_sparsity"] == pytest.approx(0.5, abs=0.01)
  saved = json.loads((tmp_path / "teacher" / "prune.json").read_text())
  assert len(saved["pruned"]) == 4 and (tmp_path / "teacher" / "prune.png").is_file()

  # Fine-tuning after one-shot pruning: the masks stay fixed, the pruned weights zero.
  tuned = compress.run_prune(teacher_dir, None, [0.9], ["global"], finetune_steps=4,
                             finetune_learning_rate=1e-2)
  row, = tuned["pruned"]
  assert row["finetuned_kernel_sparsity"] == row["kernel_sparsity"] == pytest.approx(0.9, abs=0.01)
  assert row["finetuned_loss"] != row["loss"] and tuned["finetune"]["steps"] == 4
  exp, state, _, _ = compress.load_classifier(teacher_dir, None)
  host = jax.device_get(state.params)
  masks = pruning.magnitude_masks(host, 0.9)
  after = jax.device_get(compress.finetune(exp, state, masks, 4, 1e-2).params)
  kernel = lambda tree: np.asarray(tree["Dense_0"]["kernel"])      # noqa: E731
  mask = np.asarray(masks["Dense_0"]["kernel"])
  assert np.all(kernel(after)[~mask] == 0.0)                  # exactly zero
  assert np.any(kernel(after)[mask] != kernel(host)[mask])    # the rest trained
  chex.assert_trees_all_equal(jax.device_get(state.params), host)   # the run untouched

  rows = compress.run_quantize(teacher_dir, None, ["ours"], latency_batch=0)["rows"]
  assert rows[0]["method"] == "float32" and rows[0]["accuracy"] == dense
  assert all(r["size_bytes"] < 0.4 * rows[0]["size_bytes"] for r in rows[1:])
  assert (tmp_path / "teacher" / "quantize.json").is_file()

  config = _tiny_mnist()
  config.task = base_config(task="knowledge_distillation").task
  config.task.teacher_workdir = teacher_dir
  config.model = model_config("mlp", hidden=(8,))
  record = train.train_and_evaluate(config, str(tmp_path / "student"))
  assert np.isfinite(record["final"]["test"]["loss"])
  assert (tmp_path / "student" / "test_report.txt").is_file()
  exp = train.build(config)
  before = checkpointed_state(teacher_config, teacher_dir)
  chex.assert_trees_all_equal(exp.task.teacher.state.params, jax.device_get(before.params))
  # The student's checkpoint is a plain classifier's: data-free inference needs no teacher.
  student, _, _, _ = train.load_trained(str(tmp_path / "student"))
  assert student.task.teacher is None


def test_bad_compression_settings_are_refused_in_one_sentence(mock_tfds, tmp_path):
  def refused(config, match):
    with pytest.raises(UserError, match=match) as e:
      validate(config, 1)
    assert not re.search(r"\.\s+[A-Z]", str(e.value))        # one sentence
  config = tiny(load_config("mnist_pruned"))
  config.optimizer.prune_sparsity = 1.0
  refused(config, r"prune_sparsity=1.0 must be in \[0, 1\)")
  config.optimizer.prune_sparsity, config.optimizer.prune_end = 0.5, 0.0
  refused(config, "prune_start=0.0 and prune_end=0.0")

  config = tiny(load_config("mnist_distillation"))
  config.task.alpha = 1.5
  refused(config, r"alpha=1.5 must be in \[0, 1\]")
  config.task.alpha, config.task.teacher_workdir = 0.5, ""
  refused(config, "teacher_workdir is empty")
  config.task.teacher_workdir = str(tmp_path / "nowhere")
  with pytest.raises(UserError, match="holds no trained run"):
    train.train_and_evaluate(config, str(tmp_path / "student"))
  assert not (tmp_path / "student").exists()        # refused before writing anything
  (tmp_path / "fashion").mkdir()
  (tmp_path / "fashion" / "config.json").write_text(json.dumps(
      {**tiny(load_config("mnist")).to_dict(), "data": {"name": "fashion_mnist"}}))
  config.task.teacher_workdir = str(tmp_path / "fashion")
  with pytest.raises(UserError, match="trained on 'fashion_mnist' and the student on 'mnist'"):
    train.train_and_evaluate(config, str(tmp_path / "student"))

  with pytest.raises(UserError, match="comma-separated numbers"):
    compress._floats("half")
  with pytest.raises(UserError, match="fractions in"):
    compress._floats("0.5,1.0")
  with pytest.raises(UserError, match="has no checkpoint|holds no|no last"):
    compress.run_prune(str(tmp_path / "fashion"), None, [0.5], ["global"])


def test_keep_masks_holds_pruned_weights_at_zero_under_any_optimizer():
  params = _params(2)
  masks = pruning.magnitude_masks(params, 0.6)
  params = pruning.apply_masks(params, masks)
  tx = optax.chain(optax.adamw(1e-1, weight_decay=0.1), pruning.keep_masks(masks))
  opt_state = tx.init(params)
  for i in range(5):
    grads = jax.tree.map(lambda p: jax.random.normal(jax.random.key(i), p.shape), params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
  assert pruning.sparsity(params)["total"] == pytest.approx(0.6, abs=0.01)
  for name in params:
    kept = np.asarray(masks[name]["kernel"])
    assert np.all(np.asarray(params[name]["kernel"])[~kept] == 0.0)
    assert np.all(np.asarray(params[name]["kernel"])[kept] != 0.0)


def test_quantization_aware_training_keeps_plain_params_resumes_and_quantizes(mock_tfds,
                                                                              tmp_path):
  if not quantize.qwix_available():
    pytest.skip("qwix is not installed (pip install -e '.[compress]')")
  config = tiny(load_config("mnist_qat"), epochs=1.0)         # 6 steps
  config.plots = False
  config.model = model_config("mlp", hidden=(16,))      # qwix's dot_general; conv alike
  config.checkpoint_every_steps = 2
  config.keep_checkpoints = 20
  full = train.train_and_evaluate(config, str(tmp_path / "full"))
  killed_copy(tmp_path / "full", tmp_path / "resumed", after_step=2)
  resumed = train.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert resumed["final"] == full["final"]
  a = checkpointed_state(config, tmp_path / "full")
  chex.assert_trees_all_equal(a, checkpointed_state(config, tmp_path / "resumed"))
  # The parameters are a plain classifier's (same paths and shapes, nothing of qwix).
  plain = config.copy_and_resolve_references()
  plain.task = base_config().task
  exp = train.build(plain)
  chex.assert_trees_all_equal_shapes_and_dtypes(
      jax.device_get(a.params), jax.device_get(exp.task.init_state(exp.plan).params))
  # Training ran the fake-quantized model: its logits differ from the float network's,
  # though little, and the float one is what compress and export start from.
  qat, state, _, _ = train.load_trained(str(tmp_path / "full"))
  images = np.random.default_rng(0).integers(0, 256, (16, 28, 28, 1), dtype=np.uint8)
  fake = np.asarray(qat.task.logits(state, images))
  real = np.asarray(quantize.float_logits(qat.task, state)(images))
  assert 0 < np.abs(fake - real).max() < 0.1 * np.abs(real).max()
  rows = compress.run_quantize(str(tmp_path / "full"), None, ["w8a8"],
                               latency_batch=0)["rows"]
  assert [r["method"] for r in rows] == ["float32", "qwix w8a8"]
  assert rows[1]["size_bytes"] < 0.4 * rows[0]["size_bytes"]
  config.task.mode = "w4a4"
  with pytest.raises(UserError, match=r"config.task.mode='w4a4' must be one of w8, w8a8, "
                                      r"w4a8, w4, w2a8 \("):
    validate(config, 1)


def test_int4_weights_count_half_a_byte_and_stay_within_half_a_step():
  w = np.asarray(jax.random.normal(jax.random.key(1), (3, 3, 4, 6))) * np.arange(1, 7)
  q, scale = quantize.quantize_int8(w, bits=4)
  assert q.dtype == jnp.int4 and scale.shape == (1, 1, 1, 6)
  values = q.astype(np.int8)
  assert np.all(np.abs(values) <= 7) and np.all(np.abs(values).max(axis=(0, 1, 2)) == 7)
  assert np.all(np.abs(quantize.dequantize_int8(q, scale) - w) <= scale / 2 + 1e-6)
  # Stored size: int4 is half a byte a value (each array rounded up), int8 one, f32 four.
  assert quantize.size_bytes({"a": q, "b": np.zeros(15, jnp.int4)}) == 3 * 3 * 4 * 6 // 2 + 8
  assert quantize.size_bytes({"a": np.zeros(15, np.int8), "b": jnp.zeros(3)}) == 15 + 12
  quantized, _ = quantize.int8_weights(_params(), bits=4)
  kernels = sum(int(np.size(p)) for p in jax.tree.leaves(_params()) if np.ndim(p) >= 2)
  assert quantize.size_bytes(quantized) == quantize.size_bytes(
      quantize.int8_weights(_params())[0]) - kernels // 2


def _tiny_qat_task(mode):
  config = _tiny_mnist()
  config.task = base_config(task="quantization_aware").task
  config.task.mode = mode
  config.model.conv_impl = "xla"
  validate(config, 1)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (32, 8, 8, 1), dtype=np.uint8)
  labels = rng.integers(0, 3, 32).astype(np.int32)
  task = array_task(config, {"image": images, "label": labels}, info=image_info(3, (8, 8, 1)))
  return task, task.init_state(optim.Plan(10, 5)), images


def test_int4_modes_quantize_dense_kernels_to_half_a_byte_and_qat_trains_what_ptq_makes():
  if not quantize.qwix_available():
    pytest.skip("qwix is not installed (pip install -e '.[compress]')")
  task, state, images = _tiny_qat_task("w4a8")
  reference = np.asarray(quantize.float_logits(task, state)(images))
  spread = np.abs(reference).max()
  out, size = {}, {}
  for mode in ("w8", "w4", "w4a8", "w2a8"):
    fn, params = quantize.qwix_quantize(task, state, mode)
    out[mode], size[mode] = np.asarray(fn(images)), quantize.size_bytes(params)
    assert np.all(np.isfinite(out[mode]))
    kinds = {str(getattr(leaf, "dtype", "")) for leaf in jax.tree.leaves(params)}
    assert ("int4" in kinds) == (mode != "w8")
  # The Dense kernels (and only they) go from one byte a weight to half a byte (int4),
  # or a quarter (int2: qwix holds it in int4 arrays; the size counts the packed bits).
  dense = [int(np.size(state.params[k]["kernel"])) for k in ("Dense_0", "Dense_1")]
  assert size["w8"] - size["w4"] == size["w8"] - size["w4a8"] == sum(-(-n // 2) for n in dense)
  assert size["w4a8"] - size["w2a8"] == sum(-(-n // 2) - -(-n // 4) for n in dense)
  assert size["w4a8"] < 0.25 * quantize.size_bytes(state.params)
  # int4 is coarser than int8: further from float, still close.
  err = {m: np.abs(out[m] - reference).max() for m in out}
  assert err["w8"] < err["w4"] and 0 < err["w4a8"] < 0.5 * spread
  # The QAT model's fake-quantized forward pass is close to the int4 PTQ model's (not
  # bitwise: qwix's QT and PTQ convolutions round a few int8 activations differently, in
  # every mode): what is trained is about what `compress quantize --modes=w4a8` makes.
  fake = np.asarray(task.logits(state, images))
  assert np.abs(fake - out["w4a8"]).max() < 0.3 * err["w4a8"]
  assert np.mean(fake.argmax(-1) == out["w4a8"].argmax(-1)) >= 0.9
  # Gradients pass the int4 rounding straight through to every kernel.
  grads = jax.grad(lambda p: task.logits(state.replace(params=p), images).sum())(state.params)
  assert all(float(jnp.abs(g["kernel"]).sum()) > 0 for g in grads.values())


def test_int4_activations_and_unknown_modes_are_refused_in_one_sentence(mock_tfds, tmp_path):
  for mode, extra in (("w4a4", "int4 activations do not run on XLA:CPU"), ("int2", "")):
    with pytest.raises(UserError, match="choose from ours, ours4, w8, w8a8, w8a8_static, "
                                        "w4a8, w4, w2a8") as e:
      compress.run_quantize(str(tmp_path / "nowhere"), None, ["ours", mode])
    assert extra in str(e.value) and not re.search(r"\.\s+[A-Z]", str(e.value))
