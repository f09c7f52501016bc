import chex
import jax
import jax.numpy as jnp
import pytest

from practice_jax import models


@pytest.mark.parametrize("name,kwargs,shape", [
    ("mlp", {"hidden": (32, 16), "dropout": 0.5}, (4, 28, 28, 1)),
    ("cnn", {}, (4, 28, 28, 1)),
    ("cnn", {"features": (8, 16), "pools": ("none", "max"), "padding": "VALID",
             "conv_dropout": 0.25, "dense": (32,), "dense_dropout": 0.5}, (4, 28, 28, 1)),
    ("cnn", {"features": (8,), "pools": ("max",), "dense": (), "batch_norm": True},
     (4, 32, 32, 3)),
    # The classic nets (models/classic.py), at a small width, on both input sizes.
    ("vgg", {"width": 0.125}, (2, 28, 28, 1)),
    ("vgg", {"width": 0.125, "features": (8, 16), "depth": (1, 3)}, (2, 32, 32, 3)),
    ("nin", {"width": 0.125, "batch_norm": True}, (2, 28, 28, 1)),
    ("nin", {"width": 0.125}, (2, 32, 32, 3)),
    ("inception", {"width": 0.125}, (2, 28, 28, 1)),
    ("inception", {"width": 0.125, "batch_norm": False}, (2, 32, 32, 3)),
    ("alexnet", {"width": 0.125, "dense": 32}, (2, 28, 28, 1)),
    ("alexnet", {"width": 0.125, "dense": 32, "batch_norm": False}, (2, 32, 32, 3)),
])
def test_models_give_logits_of_the_right_shape(name, kwargs, shape):
  model = models.build(name, num_classes=7, **kwargs)
  x = jnp.ones(shape, jnp.float32)
  variables = model.init(jax.random.key(0), x, train=False)
  logits = model.apply(variables, x, train=False)
  chex.assert_shape(logits, (shape[0], 7))
  chex.assert_type(logits, jnp.float32)
  chex.assert_tree_all_finite(logits)


def test_dropout_is_random_in_training_and_off_in_eval():
  model = models.build("mlp", num_classes=10, hidden=(64,), dropout=0.5)
  x = jax.random.normal(jax.random.key(1), (8, 784))
  variables = model.init(jax.random.key(0), x)
  eval_a = model.apply(variables, x, train=False)
  without = models.build("mlp", num_classes=10, hidden=(64,), dropout=0.0)
  chex.assert_trees_all_equal(eval_a, without.apply(variables, x, train=False))  # off in eval
  train_a = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)})
  train_b = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(3)})
  assert not jnp.allclose(train_a, train_b)


def test_batch_norm_statistics_update_only_in_training():
  model = models.build("cnn", num_classes=10, features=(4,), pools=("avg",), dense=(),
                       batch_norm=True)
  x = jax.random.normal(jax.random.key(1), (8, 8, 8, 1)) * 3 + 2
  variables = model.init(jax.random.key(0), x, train=False)
  _, updated = model.apply(variables, x, train=True, mutable=["batch_stats"])
  before = variables["batch_stats"]["BatchNorm_0"]["mean"]
  after = updated["batch_stats"]["BatchNorm_0"]["mean"]
  chex.assert_equal_shape([before, after])
  assert not jnp.allclose(before, after)


def test_registry_lists_model_settings():
  assert "hidden" in models.hyperparameters("mlp")
  assert "num_classes" not in models.hyperparameters("cnn")
  assert "parent" not in models.hyperparameters("cnn")


def test_the_plain_elman_cell_is_a_tanh_recurrence():
  model = models.build("rnn_lm", 11, cell="simple", hidden=8, num_layers=1, embed_dim=4)
  tokens = jnp.array([[1, 2, 3]])
  variables = model.init(jax.random.key(0), tokens)
  chex.assert_shape(model.apply(variables, tokens), (1, 3, 11))
  cell = variables["params"]["SimpleCell_0"]
  assert set(cell) == {"i", "h"}                  # h = tanh(W_i x + W_h h + b), no gates
  assert models.check(__import__("ml_collections").ConfigDict(
      {"name": "rnn_lm", "cell": "elman"})) is not None


def test_classic_nets_refuse_mismatched_stages():
  import ml_collections
  problem = models.check(ml_collections.ConfigDict(
      {"name": "vgg", "features": (8, 16), "depth": (1,)}))
  assert "give one depth per stage" in problem
  problem = models.check(ml_collections.ConfigDict({"name": "nin", "kernels": (5,)}))
  assert "give one kernel size per block" in problem


def _char_lstm(**kwargs):
  return models.build("rnn_lm", 11, hidden=8, num_layers=2, embed_dim=6, **kwargs)


def test_the_fused_lstm_and_batch_groups_compute_what_flax_computes():
  """models/rnn.py: impl='fused' (a hand-written backward pass) and groups (the batch run as
  separate loops) have Flax's parameters and give its outputs and gradients; a batch that
  does not divide by groups runs as one loop."""
  import ml_collections
  tokens = jax.random.randint(jax.random.key(0), (4, 7), 0, 11)
  reference = _char_lstm()
  params = reference.init(jax.random.key(1), tokens)
  # Non-zero biases and larger weights, so every gradient term matters.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(2), len(leaves))
  params = jax.tree.unflatten(tree, [a + 0.3 * jax.random.normal(k, a.shape)
                                     for a, k in zip(leaves, keys)])

  def run(model):
    return jax.jit(jax.value_and_grad(
        lambda p: jnp.mean(jnp.sin(model.apply(p, tokens, train=True)))))(params)
  want = run(reference)
  for impl, groups in (("fused", 1), ("fused", 2), ("scan", 2), ("fused", 3)):
    model = _char_lstm(impl=impl, groups=groups)
    chex.assert_trees_all_equal_structs(model.init(jax.random.key(1), tokens), params)
    chex.assert_trees_all_close(run(model), want, rtol=1e-5, atol=1e-6)
  jaxpr = str(jax.make_jaxpr(lambda p: _char_lstm(impl="fused", groups=2).apply(p, tokens))(
      params))
  assert jaxpr.count("custom_vjp_call") == 4            # 2 layers x 2 groups
  # impl is the LSTM's: a GRU (shakespeare_lstm.py with --config.model.cell=gru) scans.
  gru = models.build("rnn_lm", 11, hidden=8, num_layers=1, embed_dim=6, cell="gru",
                     impl="fused", groups=2)
  chex.assert_shape(gru.apply(gru.init(jax.random.key(0), tokens), tokens), (4, 7, 11))
  assert "config.model.groups=0" in models.check(ml_collections.ConfigDict(
      {"name": "rnn_lm", "groups": 0}))
