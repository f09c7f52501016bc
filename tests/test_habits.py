"""Big-model habits: mixed precision (config.model.dtype/param_dtype), gradient
accumulation (optimizer.accumulate_steps) and a moving average of the weights
(optimizer.ema_decay) compute what they claim, resume exactly, and refuse what they
cannot do."""

from __future__ import annotations

import collections
import json
import os
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import array_task, checkpointed_state, image_info, killed_copy, load_config, tiny
from practice_jax import models, optim, train
from practice_jax.config_base import base_config
from practice_jax.errors import UserError
from practice_jax.models import precision


def _opt(**overrides):
  cfg = base_config().optimizer
  cfg.update(overrides)
  return cfg


def _constant():
  sched = base_config().schedule
  sched.name = "constant"
  return sched


PARAMS = {"Dense_0": {"kernel": jnp.arange(6.0).reshape(3, 2) / 7, "bias": jnp.ones((2,))}}


def _grads(seed):
  return jax.tree.map(lambda p: jax.random.normal(jax.random.key(seed), p.shape), PARAMS)


# -- gradient accumulation ------------------------------------------------------------

def test_accumulated_updates_equal_one_update_on_the_mean_gradient():
  """k micro-steps change nothing until the k-th, which updates exactly as one step on
  the mean gradient would, clipping and weight decay acting on the mean."""
  settings = dict(name="adamw", weight_decay=0.1, grad_clip_norm=0.5, learning_rate=0.1)
  plain, _ = optim.build(_opt(**settings), _constant(), optim.Plan(10, 5))
  accumulated, _ = optim.build(_opt(accumulate_steps=3, **settings), _constant(),
                               optim.Plan(30, 15))
  p_plain, s_plain = PARAMS, plain.init(PARAMS)
  p_acc, s_acc = PARAMS, accumulated.init(PARAMS)
  for update in range(2):
    micro = [_grads(10 * update + i) for i in range(3)]
    for i, g in enumerate(micro):
      u, s_acc = accumulated.update(g, s_acc, p_acc)
      p_acc = optax.apply_updates(p_acc, u)
      if i < 2:
        chex.assert_trees_all_close(u, jax.tree.map(jnp.zeros_like, u))
    mean = jax.tree.map(lambda *g: sum(g) / 3, *micro)
    u, s_plain = plain.update(mean, s_plain, p_plain)
    p_plain = optax.apply_updates(p_plain, u)
    chex.assert_trees_all_close(p_acc, p_plain, atol=1e-6)


def test_the_schedule_counts_optimizer_updates():
  sched = base_config().schedule
  sched.name, sched.warmup_steps = "warmup_cosine", 0
  _, plain = optim.build(_opt(), sched, optim.Plan(10, 5))
  _, accumulated = optim.build(_opt(accumulate_steps=4), sched, optim.Plan(40, 20))
  for step in range(40):
    assert float(accumulated(step)) == pytest.approx(float(plain(step // 4)))


def _mlp(tmp_path, name, **overrides):
  config = tiny(load_config("mnist_mlp"), epochs=1.0)
  config.model.hidden, config.model.dropout = (16,), 0.0
  config.optimizer.name, config.optimizer.momentum = "sgd", 0.0
  config.optimizer.learning_rate = 0.5
  config.schedule.name = "constant"
  config.steps_per_dispatch = 1
  config.plots = False
  for key, value in overrides.items():
    target = config
    *parents, last = key.split(".")
    for part in parents:
      target = target[part]
    target[last] = value
  return config, str(tmp_path / name)


def test_a_run_with_accumulation_trains_as_the_larger_batch(mock_tfds, tmp_path):
  """Batch 8 accumulated over 2 steps follows batch 16's trajectory: the data order is
  a function of the example index, so micro-batches 2i and 2i+1 are batch i's halves."""
  big, big_dir = _mlp(tmp_path, "big", batch_size=16)
  small, small_dir = _mlp(tmp_path, "small", batch_size=8,
                          **{"optimizer.accumulate_steps": 2})
  big_record = train.train_and_evaluate(big, big_dir)
  small_record = train.train_and_evaluate(small, small_dir)
  assert small_record["steps"] == 2 * big_record["steps"]
  chex.assert_trees_all_close(checkpointed_state(small, small_dir).params,
                              checkpointed_state(big, big_dir).params, atol=2e-5)


def test_a_run_killed_between_micro_steps_resumes_exactly(mock_tfds, tmp_path):
  """Accumulated gradients and the moving average are optimizer state: a run resumed
  from a checkpoint taken between micro-steps ends bitwise where the uninterrupted one
  did. The average is evaluated alongside the raw weights."""
  config, workdir = _mlp(tmp_path, "ref", batch_size=8, keep_checkpoints=20,
                         checkpoint_every_steps=1,
                         **{"optimizer.accumulate_steps": 3, "optimizer.ema_decay": 0.9})
  record = train.train_and_evaluate(config, workdir)
  assert {"validation", "validation_ema", "test", "test_ema"} <= set(record["final"])
  assert record["final"]["test"] != record["final"]["test_ema"]
  lines = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]
  assert any(x["split"] == "validation_ema" and "accuracy" in x for x in lines)
  reference = checkpointed_state(config, workdir)
  copy = killed_copy(workdir, tmp_path / "killed", after_step=4)   # 1 of 3 accumulated
  assert int(checkpointed_state(config, copy).step) == 4
  train.train_and_evaluate(config, str(copy))
  chex.assert_trees_all_equal(checkpointed_state(config, copy), reference)


# -- the moving average of the weights ------------------------------------------------

def test_the_moving_average_follows_its_formula():
  tx, _ = optim.build(_opt(name="sgd", momentum=0.0, learning_rate=0.1, ema_decay=0.5),
                      _constant(), optim.Plan(10, 5))
  params, state = PARAMS, tx.init(PARAMS)
  expected = jax.tree.map(np.asarray, PARAMS)
  for n in range(4):
    updates, state = tx.update(_grads(n), state, params)
    params = optax.apply_updates(params, updates)
    d = min(0.5, (1 + n) / (10 + n))
    expected = jax.tree.map(lambda e, p: d * e + (1 - d) * np.asarray(p), expected, params)
  fake = train_state(params, state)
  chex.assert_trees_all_close(optim.with_ema(fake).params, expected, atol=1e-6)
  # Without an average, the state is evaluated as it is.
  plain, _ = optim.build(_opt(), _constant(), optim.Plan(10, 5))
  same = train_state(PARAMS, plain.init(PARAMS))
  assert optim.with_ema(same) is same


def train_state(params, opt_state):
  from practice_jax.state import TrainState
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state,
                    model_state={}, key=jax.random.key(0))


def test_with_ema_use_instead_the_average_is_what_the_run_reports(mock_tfds, tmp_path):
  config, workdir = _mlp(tmp_path, "instead", peak_flops=1e12,
                         **{"optimizer.ema_decay": 0.9, "optimizer.ema_use": "instead"})
  record = train.train_and_evaluate(config, workdir)
  assert "test_ema" not in record["final"]
  speed = record["speed"]     # and the run records its FLOPs and utilisation
  assert speed["flops_per_step"] > 2 * (2 * 8 * (784 * 16 + 16 * 10))   # fwd + bwd
  assert speed["peak_flops"] == 1e12 and 0 < speed["mfu"] < 1
  # What predict, evaluate and export load is the average the run reported.
  _, loaded, _, _ = train.load_trained(workdir)
  raw = checkpointed_state(config, workdir)
  chex.assert_trees_all_close(loaded.params, optim.with_ema(raw).params)
  assert not np.allclose(loaded.params["Dense_0"]["kernel"], raw.params["Dense_0"]["kernel"])


# -- mixed precision ------------------------------------------------------------------

def test_every_model_takes_the_precision_settings():
  for name in models.names():
    assert {"dtype", "param_dtype"} <= set(models.defaults(name))
  problem = models.check(_with(dtype="float16"))
  assert "loss scaling" in problem and "bfloat16" in problem
  assert models.check(_with(param_dtype="int8")).startswith("config.model.param_dtype")


def _with(**settings):
  model = base_config().model
  model.update(settings)
  return model


@pytest.mark.parametrize("name", ["cnn", "mlp", "gpt"])
def test_bfloat16_compute_keeps_float32_parameters_and_outputs(name):
  if name == "gpt":
    kwargs, x = {"block_size": 8, "num_layers": 1, "embed_dim": 16, "num_heads": 2}, \
        jnp.arange(16).reshape(2, 8) % 10
  else:
    kwargs, x = ({"conv_impl": "xla"} if name == "cnn" else {}), \
        jax.random.uniform(jax.random.key(1), (4, 28, 28, 1))
  full = models.build(name, 10, **kwargs)
  mixed = models.build(name, 10, dtype="bfloat16", **kwargs)
  assert isinstance(mixed, precision.MixedPrecision) and not isinstance(
      full, precision.MixedPrecision)
  variables = mixed.init(jax.random.key(0), x, train=False)
  chex.assert_trees_all_equal(variables, full.init(jax.random.key(0), x, train=False))
  assert {a.dtype for a in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  out = mixed.apply(variables, x, train=False)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, full.apply(variables, x, train=False), atol=0.05, rtol=0.05)
  grads = jax.grad(lambda p: mixed.apply({"params": p}, x, train=False).sum())(
      variables["params"])
  assert {a.dtype for a in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}
  bf16_params = models.build(name, 10, dtype="bfloat16", param_dtype="bfloat16",
                             **kwargs).init(jax.random.key(0), x, train=False)
  assert {a.dtype for a in jax.tree.leaves(bf16_params)} == {jnp.dtype(jnp.bfloat16)}


def test_bfloat16_matmuls_are_only_the_dense_layers_forward_and_gradients():
  """matmul_dtype='bfloat16': each nn.Dense matmul (and a tied head's), forward and both
  gradients, is a bfloat16 x bfloat16 -> float32 dot; attention's einsums, parameters,
  gradients and outputs stay float32, close to the float32 model's."""
  kwargs = {"block_size": 8, "num_layers": 1, "embed_dim": 16, "num_heads": 2}
  x = jnp.arange(16).reshape(2, 8) % 10
  full = models.build("gpt", 10, **kwargs)
  mixed = models.build("gpt", 10, matmul_dtype="bfloat16", **kwargs)
  variables = mixed.init(jax.random.key(0), x, train=False)
  chex.assert_trees_all_equal(variables, full.init(jax.random.key(0), x, train=False))

  def loss(model, params):
    return (model.apply({"params": params}, x, train=False) ** 2).mean()

  out = mixed.apply(variables, x, train=False)
  reference = full.apply(variables, x, train=False)
  assert out.dtype == jnp.float32 and not np.array_equal(out, reference)
  np.testing.assert_allclose(out, reference, atol=0.05, rtol=0.05)
  grads = jax.grad(lambda p: loss(mixed, p))(variables["params"])
  assert {a.dtype for a in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}
  for got, want in zip(jax.tree.leaves(grads),
                       jax.tree.leaves(jax.grad(lambda p: loss(full, p))(variables["params"]))):
    np.testing.assert_allclose(got, want, atol=0.02 * float(jnp.abs(want).max()) + 1e-6)
  step = jax.jit(jax.grad(lambda p: loss(mixed, p))).lower(variables["params"])
  hlo = step.as_text()
  dots = _dot_dtypes(hlo)
  # Four Dense layers (qkv, proj, mlp in and out) and the tied head (wte.attend) x
  # (forward, input and kernel gradients) in bfloat16; attention's two einsums and their
  # gradients in float32.
  assert dots[("bf16", "bf16", "f32")] == 15, dots
  assert dots[("f32", "f32", "f32")] == 6, dots
  # Each kernel gradient's transposed input and its product go through a barrier, so
  # that XLA:CPU keeps that matmul in bfloat16 (precision.py). Compiled, the kernel
  # gradients run as the forward matmuls do: all 15 in bfloat16 where XLA:CPU runs
  # bfloat16 matmuls, none where it converts them all to float32 (with a barrier on the
  # transposed view alone, the 5 kernel gradients were converted: 10 of 15).
  assert hlo.count("stablehlo.optimization_barrier") == 10, hlo
  compiled = step.compile().as_text()
  assert _compiled_dot_dtypes(compiled)[("bf16", "bf16", "f32")] in (0, 15), compiled
  assert "config.model.matmul_dtype" in models.check(_with(matmul_dtype="float16"))


def test_the_fused_lstm_takes_bfloat16_matmuls_outside_its_time_loops():
  """matmul_dtype='bfloat16' with models/rnn.py's fused LSTM: each layer's input
  projection, input gradient and both kernel gradients are bfloat16 x bfloat16 ->
  float32 dots (and the output layer's three), the recurrent matmul of every step stays
  float32; outputs and gradients float32 and close to the float32 model's."""
  tokens = jax.random.randint(jax.random.key(0), (4, 7), 0, 11)
  kwargs = {"hidden": 8, "num_layers": 2, "embed_dim": 6, "impl": "fused"}
  full = models.build("rnn_lm", 11, **kwargs)
  mixed = models.build("rnn_lm", 11, matmul_dtype="bfloat16", **kwargs)
  variables = full.init(jax.random.key(1), tokens)

  def loss(model, params):
    return (model.apply(params, tokens, train=True) ** 2).mean()
  out, reference = mixed.apply(variables, tokens), full.apply(variables, tokens)
  assert not precision.bfloat16_matmuls()             # the policy ends with the call
  assert out.dtype == jnp.float32 and not np.array_equal(out, reference)
  np.testing.assert_allclose(out, reference, atol=0.05, rtol=0.05)
  got, want = (jax.grad(lambda p, m=m: loss(m, p))(variables) for m in (mixed, full))
  assert {a.dtype for a in jax.tree.leaves(got)} == {jnp.dtype(jnp.float32)}
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, atol=0.02 * float(jnp.abs(b).max()) + 1e-6)
  step = jax.jit(jax.grad(lambda p: loss(mixed, p))).lower(variables)
  dots = _dot_dtypes(step.as_text())
  assert dots == {("bf16", "bf16", "f32"): 11, ("f32", "f32", "f32"): 4}, dots
  assert _compiled_dot_dtypes(step.compile().as_text())[("bf16", "bf16", "f32")] in (0, 11)


def test_auto_matmul_dtype_is_bfloat16_only_on_cpus_with_bfloat16_matrix_units(monkeypatch):
  """matmul_dtype='auto': the bfloat16 policy where /proc/cpuinfo lists amx_bf16, and the
  plain float32 model elsewhere (AVX-512 alone, an unknown CPU), under pytest and with
  PRACTICE_JAX_AUTOTUNE=0."""
  from practice_jax import autotune
  kwargs = {"block_size": 8, "num_layers": 1, "embed_dim": 16, "num_heads": 2}
  amx = {"avx512f", "avx512_bf16", "amx_bf16"}
  monkeypatch.setattr(autotune, "cpu_flags", lambda: frozenset(amx))
  assert precision.resolve_matmul_dtype("auto") == "float32"        # pytest: off
  monkeypatch.setenv("PRACTICE_JAX_AUTOTUNE", "1")
  for flags, want in ((amx, "bfloat16"), ({"avx2", "avx512f"}, "float32"),
                      (set(), "float32")):
    monkeypatch.setattr(autotune, "cpu_flags", lambda flags=flags: frozenset(flags))
    assert precision.resolve_matmul_dtype("auto") == want
    assert precision.resolve_matmul_dtype("float32") == "float32"
    model = models.build("gpt", 10, matmul_dtype="auto", **kwargs)
    if want == "bfloat16":
      assert isinstance(model, precision.MixedPrecision) and model.matmul_dtype == want
    else:
      assert not isinstance(model, precision.MixedPrecision)
  monkeypatch.setenv("PRACTICE_JAX_AUTOTUNE", "0")
  assert precision.resolve_matmul_dtype("auto") == "float32"
  assert models.check(_with(matmul_dtype="auto")) is None
  assert "config.model.dtype" in models.check(_with(dtype="auto"))


def test_quantization_rewrites_the_plain_float32_model_of_a_mixed_precision_run():
  import types

  import flax.linen as nn

  from practice_jax import quantize
  config = base_config(model="mlp")
  config.model.update(dtype="bfloat16", matmul_dtype="bfloat16")
  assert isinstance(models.build("mlp", 10, **{k: v for k, v in config.model.items()
                                               if k != "name"}), precision.MixedPrecision)
  model = quantize.float_model(types.SimpleNamespace(config=config, num_classes=10))
  assert isinstance(model, nn.Module)


def test_a_bfloat16_run_learns_as_the_float32_one_does(tmp_path):
  """A CNN with batch norm trained in bfloat16 from the same start: float32 parameters
  and optimizer state, and a loss close to the float32 run's."""
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 4, 256)
  images = (rng.random((256, 8, 8, 1)) * 30 + labels[:, None, None, None] * 60).astype(np.uint8)
  data = {"image": images, "label": labels.astype(np.int32)}
  losses = {}
  for dtype in ("float32", "bfloat16"):
    config = tiny(base_config(model="cnn"))
    config.model.update(features=(8,), pools=("max",), dense=(16,), batch_norm=True,
                        conv_impl="xla", dtype=dtype)
    config.optimizer.learning_rate = 0.01
    task = array_task(config, data, {"test": data}, image_info(4, (8, 8, 1)))
    state = task.init_state(optim.Plan(40, 8))
    step = jax.jit(task.train_step)
    for i in range(40):
      state, sums = step(state, {k: v[(i % 8) * 32:(i % 8 + 1) * 32] for k, v in data.items()})
    assert {a.dtype for a in jax.tree.leaves((state.params, state.opt_state))
            if jnp.issubdtype(a.dtype, jnp.floating)} == {jnp.dtype(jnp.float32)}
    losses[dtype] = float(sums["loss_sum"] / sums["count"])
  assert losses["float32"] < 0.5, losses
  assert abs(losses["bfloat16"] - losses["float32"]) < 0.1, losses


def test_single_model_habits_are_refused_for_other_tasks():
  from practice_jax import validation
  for key, value in (("accumulate_steps", 2), ("ema_decay", 0.99)):
    config = load_config("mnist_dcgan")
    config.optimizer[key] = value
    with pytest.raises(UserError, match=f"{key} acts on the parameters of a single-model"):
      validation.validate(config, 1)


# -- model FLOPs utilisation ----------------------------------------------------------

def test_the_flops_of_a_step_are_xla_s_count_at_the_global_batch():
  from practice_jax import flops
  w = jnp.ones((64, 32))
  batches = {"x": jnp.ones((3, 4, 64))}          # [steps, this process's rows, ...]
  counted = flops.step_flops(lambda s, b: (s, {"y": b["x"] @ s}), w, batches, 16)
  assert counted == 2 * 16 * 64 * 32
  assert flops.device_peak(5e12) == (5e12, "config.peak_flops")
  if jax.default_backend() == "cpu":
    assert flops.device_peak()[0] is None


def _dot_dtypes(stablehlo: str) -> collections.Counter:
  """(lhs, rhs, result) element types of every dot_general in StableHLO text."""
  return collections.Counter(re.findall(
      r"stablehlo.dot_general.*?: \(tensor<[^>]*x(\w+)>, tensor<[^>]*x(\w+)>\) "
      r"-> tensor<[^>]*x(\w+)>", stablehlo))


def _compiled_dot_dtypes(hlo: str) -> collections.Counter:
  """(lhs, rhs, result) element types of every dot in compiled HLO text."""
  types = {m.group(1): m.group(2) for m in re.finditer(r"%([\w.\-]+) = (\w+)\[", hlo)}
  for signature in re.findall(r"\(([^()]*)\) -> ", hlo):
    types.update(re.findall(r"([\w.\-]+): (\w+)\[", signature))
  return collections.Counter(
      (types.get(lhs), types.get(rhs), out)
      for out, lhs, rhs in re.findall(r"= (\w+)\[[\d,]*\]\S* dot\(%([\w.\-]+), %([\w.\-]+)\)",
                                      hlo))
