import chex
import jax
import jax.numpy as jnp
import ml_collections
import optax
import pytest

from practice_jax import optim
from practice_jax.config_base import base_config


def _opt_config(**overrides) -> ml_collections.ConfigDict:
  cfg = base_config().optimizer
  cfg.update(overrides)
  return cfg


def _constant_tx(opt: ml_collections.ConfigDict, learning_rate: float
                 ) -> optax.GradientTransformation:
  """The optimizer of `opt` at a constant learning rate."""
  opt.learning_rate = learning_rate
  sched = base_config().schedule
  sched.name = "constant"
  tx, schedule = optim.build(opt, sched, optim.Plan(total_steps=100, steps_per_epoch=10))
  assert float(schedule(0)) == float(schedule(99)) == pytest.approx(learning_rate)
  return tx


PARAMS = {"Dense_0": {"kernel": jnp.full((3, 2), 2.0), "bias": jnp.full((2,), 2.0)}}


@pytest.mark.parametrize("name,extra", [
    ("sgd", {"momentum": 0.0}), ("sgd", {"momentum": 0.9}),
    ("sgd", {"momentum": 0.9, "nesterov": True}), ("adam", {}),
    ("adamw", {"weight_decay": 0.1}), ("rmsprop", {"momentum": 0.0}),
    ("rmsprop", {"momentum": 0.9}), ("muon", {"weight_decay": 0.1}),
])
def test_every_optimizer_descends_a_quadratic(name, extra):
  tx = _constant_tx(_opt_config(name=name, **extra), 0.05)
  params = PARAMS
  state = tx.init(params)
  loss = lambda p: sum(jnp.sum(x ** 2) for x in jax.tree.leaves(p))
  start = loss(params)
  for _ in range(20):
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    params = optax.apply_updates(params, updates)
  chex.assert_trees_all_equal_shapes(params, PARAMS)
  assert loss(params) < 0.9 * start


@pytest.mark.parametrize("name,extra,reference", [
    ("sgd", {"momentum": 0.0}, optax.sgd(0.05)),
    ("sgd", {"momentum": 0.9, "nesterov": True}, optax.sgd(0.05, 0.9, nesterov=True)),
    ("adam", {"b2": 0.99}, optax.adam(0.05, b2=0.99)),
    ("adamw", {"weight_decay": 0.1, "no_decay": ""}, optax.adamw(0.05, weight_decay=0.1)),
    ("rmsprop", {"momentum": 0.0, "rmsprop_decay": 0.8},
     optax.rmsprop(0.05, decay=0.8, eps=1e-8)),
], ids=["sgd", "nesterov", "adam", "adamw", "rmsprop"])
def test_each_optimizer_is_the_optax_one_it_names(name, extra, reference):
  """Three updates on the same gradients equal optax's own optimizer: the names are not
  interchangeable (an 'adam' that ran sgd would fail here)."""
  tx = _constant_tx(_opt_config(name=name, **extra), 0.05)
  ours, theirs = tx.init(PARAMS), reference.init(PARAMS)
  params = PARAMS
  for i in range(3):
    grads = jax.tree.map(lambda p: jnp.sin(p * (i + 1)), params)
    a, ours = tx.update(grads, ours, params)
    b, theirs = reference.update(grads, theirs, params)
    chex.assert_trees_all_close(a, b, rtol=1e-6, atol=1e-7)
    params = optax.apply_updates(params, a)


def test_decoupled_weight_decay_skips_biases_by_default():
  tx = _constant_tx(_opt_config(name="sgd", momentum=0.0, weight_decay=0.5), 0.1)
  zero_grads = jax.tree.map(jnp.zeros_like, PARAMS)
  updates, _ = tx.update(zero_grads, tx.init(PARAMS), PARAMS)
  chex.assert_trees_all_close(updates["Dense_0"]["kernel"], -0.1 * 0.5 * 2.0 * jnp.ones((3, 2)))
  chex.assert_trees_all_close(updates["Dense_0"]["bias"], jnp.zeros((2,)))


def test_l2_and_l1_penalties_are_added_to_the_gradient():
  grads = jax.tree.map(jnp.zeros_like, PARAMS)
  l2 = _constant_tx(_opt_config(name="sgd", momentum=0.0, l2=0.01, no_decay=""), 1.0)
  updates, _ = l2.update(grads, l2.init(PARAMS), PARAMS)
  chex.assert_trees_all_close(updates, jax.tree.map(lambda p: -0.01 * p, PARAMS))
  masked = _constant_tx(_opt_config(name="sgd", momentum=0.0, l2=0.01), 1.0)  # default no_decay
  updates, _ = masked.update(grads, masked.init(PARAMS), PARAMS)
  chex.assert_trees_all_close(updates["Dense_0"]["kernel"], -0.02 * jnp.ones((3, 2)))
  chex.assert_trees_all_close(updates["Dense_0"]["bias"], jnp.zeros((2,)))
  l1 = _constant_tx(_opt_config(name="sgd", momentum=0.0, l1=0.01), 1.0)
  updates, _ = l1.update(grads, l1.init(PARAMS), PARAMS)
  chex.assert_trees_all_close(updates["Dense_0"]["kernel"], -0.01 * jnp.ones((3, 2)))
  chex.assert_trees_all_close(updates["Dense_0"]["bias"], jnp.zeros((2,)))


def test_gradient_clipping_bounds_the_update_norm():
  tx = _constant_tx(_opt_config(name="sgd", momentum=0.0, grad_clip_norm=1.0), 1.0)
  grads = jax.tree.map(lambda p: 100.0 * jnp.ones_like(p), PARAMS)
  updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
  assert float(optax.global_norm(updates)) == pytest.approx(1.0, rel=1e-5)


def _schedule(name, **kw):
  cfg = base_config().schedule
  cfg.name = name
  cfg.update(kw)
  return optim.build_schedule(cfg, 0.1, optim.Plan(total_steps=1000, steps_per_epoch=100))


def test_schedules_have_the_documented_shape():
  assert float(_schedule("constant")(999)) == pytest.approx(0.1)
  cos = _schedule("cosine", end_factor=0.0)
  assert float(cos(0)) == pytest.approx(0.1) and float(cos(1000)) == pytest.approx(0.0, abs=1e-7)
  warm = _schedule("warmup_cosine", warmup_epochs=2.0)   # 200 steps
  assert float(warm(0)) == 0.0 and float(warm(100)) == pytest.approx(0.05)
  assert float(warm(200)) == pytest.approx(0.1)
  step = _schedule("step", step_fractions=(0.5, 0.75), step_factor=0.1)
  assert [float(step(s)) for s in (499, 500, 750)] == pytest.approx([0.1, 0.01, 0.001])
  cycle = _schedule("one_cycle", one_cycle_pct_start=0.3)
  assert float(cycle(300)) == pytest.approx(0.1) and float(cycle(0)) < 0.01
  assert float(cycle(1000)) < 1e-4


def test_frozen_parameters_are_never_updated():
  tx = _constant_tx(_opt_config(name="adamw", weight_decay=0.1, freeze=r"^Dense_0/"), 0.1)
  params = {**PARAMS, "Dense_1": {"kernel": jnp.full((2, 2), 2.0)}}
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  chex.assert_trees_all_equal(updates["Dense_0"], jax.tree.map(jnp.zeros_like, PARAMS["Dense_0"]))
  assert float(jnp.min(jnp.abs(updates["Dense_1"]["kernel"]))) > 0


def test_lr_groups_scale_the_first_matching_group():
  groups = ((r"bias$", 0.0), (r"^Dense_0/", 0.5), (r"kernel", 3.0))
  tx = _constant_tx(_opt_config(name="sgd", momentum=0.0, lr_groups=groups), 1.0)
  params = {**PARAMS, "Dense_1": {"kernel": jnp.full((2, 2), 2.0)}}
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  chex.assert_trees_all_close(updates["Dense_0"]["bias"], jnp.zeros((2,)))
  chex.assert_trees_all_close(updates["Dense_0"]["kernel"], -0.5 * jnp.ones((3, 2)))
  chex.assert_trees_all_close(updates["Dense_1"]["kernel"], -3.0 * jnp.ones((2, 2)))


def test_frozen_layers_keep_their_batch_norm_statistics():
  opt = _opt_config(freeze=r"^BatchNorm_0/")
  old = {"batch_stats": {"BatchNorm_0": {"mean": jnp.zeros(2)},
                         "BatchNorm_1": {"mean": jnp.zeros(2)}}}
  new = jax.tree.map(lambda x: x + 1.0, old)
  kept = optim.keep_frozen(opt, old, new)
  chex.assert_trees_all_equal(kept["batch_stats"]["BatchNorm_0"], old["batch_stats"]["BatchNorm_0"])
  chex.assert_trees_all_equal(kept["batch_stats"]["BatchNorm_1"], new["batch_stats"]["BatchNorm_1"])
  assert optim.keep_frozen(_opt_config(), old, new) is new


MUON_PARAMS = {"Dense_0": {"kernel": jnp.full((6, 4), 0.5), "bias": jnp.zeros((4,))},
               "Dense_1": {"kernel": jnp.full((4, 6), 0.5)},
               "Dense_2": {"kernel": jnp.full((6, 4), -0.5)},
               "Embed_0": {"embedding": jnp.ones((5, 4))},
               "LayerNorm_0": {"scale": jnp.ones((4,))}}


def _muon_grads(i=0):
  return jax.tree_util.tree_map_with_path(
      lambda path, p: jnp.sin(jnp.arange(p.size, dtype=jnp.float32).reshape(p.shape)
                              * (1.3 + len(str(path)) + i)), MUON_PARAMS)


def test_muon_takes_the_dense_kernels_and_adam_the_rest():
  labels = optim.muon_labels(r"kernel$")(
      {**MUON_PARAMS, "Conv_0": {"kernel": jnp.ones((3, 3, 1, 4))}})
  assert labels["Dense_0"] == {"kernel": "muon", "bias": "adam"}
  assert labels["Dense_1"]["kernel"] == labels["Dense_2"]["kernel"] == "muon"
  assert labels["Embed_0"]["embedding"] == labels["LayerNorm_0"]["scale"] == "adam"
  assert labels["Conv_0"]["kernel"] == "muon"       # as the matrix [3 * 3 * 1, 4]


def test_muons_first_update_is_optax_contribs_muon_and_adams():
  """Step one of the kernels equals optax.contrib.muon's (Nesterov momentum, 5
  Newton-Schulz steps in float32, RMS 0.2; later steps differ by optax's bias correction
  of the momentum, which Jordan's Muon and this one leave out), and three steps of every
  other parameter equal optax.adam's."""
  tx = _constant_tx(_opt_config(name="muon", muon_dtype="float32"), 0.05)
  labels = optim.muon_labels(r"kernel$")(MUON_PARAMS)
  reference = optax.contrib.muon(
      0.05, consistent_rms=0.2, muon_weight_dimension_numbers=lambda params: jax.tree.map(
          lambda label: optax.contrib.MuonDimensionNumbers() if label == "muon" else None,
          labels))
  adam = optax.adam(0.05)
  state, muon_state, adam_state = (t.init(MUON_PARAMS) for t in (tx, reference, adam))
  for i in range(3):
    ours, state = tx.update(_muon_grads(i), state, MUON_PARAMS)
    by_adam, adam_state = adam.update(_muon_grads(i), adam_state, MUON_PARAMS)
    for path, label in jax.tree_util.tree_leaves_with_path(labels):
      if label == "adam":
        chex.assert_trees_all_close(_at(ours, path), _at(by_adam, path), rtol=1e-5)
    if i == 0:
      by_muon, _ = reference.update(_muon_grads(), muon_state, MUON_PARAMS)
      for path, label in jax.tree_util.tree_leaves_with_path(labels):
        if label == "muon":
          chex.assert_trees_all_close(_at(ours, path), _at(by_muon, path), rtol=1e-5,
                                      atol=1e-6)


def _at(tree, path):
  for key in path:
    tree = tree[key.key]
  return tree


def test_muon_orthogonalizes_each_matrix_alone_though_same_shapes_share_an_iteration():
  """Dense_0 [6, 4] and the transposed-shape Dense_1 [4, 6] and Dense_2 share one
  batched iteration: each result equals the matrix's own iteration, is close to
  orthogonal (singular values ~0.7-1.2) and has RMS 0.2."""
  updates = {"a": jax.random.normal(jax.random.key(0), (6, 4)),
             "b": jax.random.normal(jax.random.key(1), (4, 6)),
             "c": jax.random.normal(jax.random.key(2), (6, 4))}
  together, _ = optim.orthogonalized(5, jnp.float32).update(updates, optax.EmptyState())
  for name, u in updates.items():
    alone, _ = optim.orthogonalized(5, jnp.float32).update({name: u}, optax.EmptyState())
    chex.assert_trees_all_close(together[name], alone[name], rtol=1e-5, atol=1e-6)
    o = together[name]
    assert float(jnp.sqrt(jnp.mean(o ** 2))) == pytest.approx(0.2, rel=0.15)
    singular = jnp.linalg.svd(o / (0.2 * 6 ** 0.5), compute_uv=False)
    assert float(singular.min()) > 0.6 and float(singular.max()) < 1.25, singular


def test_muon_treats_a_conv_kernel_as_the_matrix_fan_in_by_out():
  u = {"kernel": jax.random.normal(jax.random.key(4), (3, 3, 2, 8))}
  conv, _ = optim.orthogonalized(5, jnp.float32).update(u, optax.EmptyState())
  dense, _ = optim.orthogonalized(5, jnp.float32).update(
      {"kernel": u["kernel"].reshape(18, 8)}, optax.EmptyState())
  assert conv["kernel"].shape == (3, 3, 2, 8)
  chex.assert_trees_all_close(conv["kernel"].reshape(18, 8), dense["kernel"], rtol=1e-6)


def test_muon_in_bfloat16_stays_close_to_float32():
  """Compiled, as in a train step: a tall matrix alone in its group (its transpose not
  written out) once made XLA:CPU fail at run time ("Unsupported element type for
  DotThunk::Execute: BF16 x BF16 = F32")."""
  u = {"k": jax.random.normal(jax.random.key(3), (32, 96)),
       "tall": jax.random.normal(jax.random.key(5), (3, 3, 32, 64))}
  run = lambda dtype: jax.jit(  # noqa: E731
      lambda u: optim.orthogonalized(5, dtype).update(u, optax.EmptyState())[0])(u)
  f32, bf16 = run(jnp.float32), run(jnp.bfloat16)
  assert bf16["k"].dtype == bf16["tall"].dtype == jnp.float32
  error = jnp.linalg.norm(bf16["tall"] - f32["tall"]) / jnp.linalg.norm(f32["tall"])
  assert float(error) < 0.06, float(error)
  error = jnp.linalg.norm(bf16["k"] - f32["k"]) / jnp.linalg.norm(f32["k"])
  # ~3% here (bfloat16 keeps ~3 significant digits over 15 matmuls): far inside the
  # iteration's own spread of singular values (0.7-1.2), as in Jordan's bfloat16 Muon.
  assert float(error) < 0.06, float(error)


@pytest.mark.parametrize("key,value,words", [
    ("muon_ns_steps", 0, "muon_ns_steps=0 must be a whole number >= 1"),
    ("muon_momentum", 1.0, "muon_momentum=1.0 must be in [0, 1)"),
    ("muon_dtype", "fp8", "muon_dtype='fp8' must be one of"),
    ("muon_params", "(kernel", "muon_params='(kernel' is not a valid regular expression"),
])
def test_muons_settings_are_checked_in_one_sentence(key, value, words):
  problem = optim.check(_opt_config(name="muon", **{key: value}), base_config().schedule)
  assert problem and words in problem, problem
