import chex
import jax
import jax.numpy as jnp
import numpy as np
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


def _perturbed(params):
  """Non-zero biases and larger weights, so every gradient term matters."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(2), len(leaves))
  return jax.tree.unflatten(tree, [a + 0.3 * jax.random.normal(k, a.shape)
                                   for a, k in zip(leaves, keys)])


def test_the_fused_lstm_computes_what_flax_computes():
  """models/rnn.py: impl='fused' (a hand-written backward pass) has Flax's parameters and
  gives its outputs and gradients; a GRU scans whatever impl says."""
  tokens = jax.random.randint(jax.random.key(0), (4, 7), 0, 11)
  reference = _char_lstm()
  params = _perturbed(reference.init(jax.random.key(1), tokens))

  def run(model):
    return jax.jit(jax.value_and_grad(
        lambda p: jnp.mean(jnp.sin(model.apply(p, tokens, train=True)))))(params)
  fused = _char_lstm(impl="fused")
  chex.assert_trees_all_equal_structs(fused.init(jax.random.key(1), tokens), params)
  chex.assert_trees_all_close(run(fused), run(reference), rtol=1e-5, atol=1e-6)
  jaxpr = str(jax.make_jaxpr(lambda p: fused.apply(p, tokens))(params))
  assert jaxpr.count("custom_vjp_call") == 2            # one per layer
  gru = models.build("rnn_lm", 11, hidden=8, num_layers=1, embed_dim=6, cell="gru",
                     impl="fused")
  chex.assert_shape(gru.apply(gru.init(jax.random.key(0), tokens), tokens), (4, 7, 11))


@pytest.mark.parametrize("name", ["gpt", "rnn_lm", "cnn"])
def test_batch_groups_compute_what_one_batch_computes(name):
  """config.model.batch_groups (models/groups.py): the batch as 2 or 3 slices in one step
  gives the same outputs and gradients with the same parameters; a batch that does not
  divide, and calls that collect state, run whole; dropout draws per slice."""
  import ml_collections
  from practice_jax.models import groups
  if name == "cnn":
    x = jax.random.normal(jax.random.key(0), (6, 8, 8, 1))
    kwargs = {"features": (4,), "pools": ("max",), "dense": (8,), "batch_norm": True}
  else:
    x = jax.random.randint(jax.random.key(0), (6, 5), 0, 11)
    kwargs = ({"block_size": 5, "num_layers": 1, "embed_dim": 8, "num_heads": 2}
              if name == "gpt" else {"hidden": 8, "num_layers": 1, "embed_dim": 6,
                                     "impl": "fused"})
  whole = models.build(name, 11, **kwargs)
  variables = whole.init(jax.random.key(1), x, train=False)
  params = _perturbed(variables["params"])
  others = {k: v for k, v in variables.items() if k != "params"}

  def run(model, x):
    return jax.jit(jax.value_and_grad(lambda p: jnp.mean(jnp.sin(model.apply(
        {"params": p, **others}, x, train=False)))))(params)
  for k in (2, 3, 4):
    split = models.build(name, 11, batch_groups=k, **kwargs)
    assert isinstance(split, groups.BatchGroups)
    chex.assert_trees_all_equal(split.init(jax.random.key(1), x, train=False), variables)
    chex.assert_trees_all_close(run(split, x), run(whole, x), rtol=1e-5, atol=1e-6)
  split = models.build(name, 11, batch_groups=2, **kwargs)
  if name == "cnn":                                   # batch norm in training: whole
    out, state = split.apply(variables, x, train=True, mutable=["batch_stats"])
    chex.assert_trees_all_close(
        (out, state), whole.apply(variables, x, train=True, mutable=["batch_stats"]))
  else:
    loops = str(jax.make_jaxpr(lambda p: split.apply({"params": p}, x, train=False))(params))
    assert loops.count("dot_general") == 2 * str(jax.make_jaxpr(
        lambda p: whole.apply({"params": p}, x, train=False))(params)).count("dot_general")
  if name == "gpt":                                   # dropout: a different mask per slice
    drop = models.build(name, 11, batch_groups=2, **{**kwargs, "dropout": 0.5})
    same = jnp.tile(x[:3], (2, 1))
    out = drop.apply({"params": params}, same, train=True,
                     rngs={"dropout": jax.random.key(3)})
    assert not np.allclose(out[:3], out[3:])
  assert "config.model.batch_groups=0" in models.check(ml_collections.ConfigDict(
      {"name": name, "batch_groups": 0}))


def test_batch_groups_run_whole_when_another_argument_leads_with_the_batch():
  from practice_jax.models import groups
  calls = []

  class Recorder:
    def apply(self, variables, x, y=None, rngs=None):
      calls.append(x.shape[0])
      return x if y is None else x + y
  split = groups.BatchGroups(Recorder(), 2)
  np.testing.assert_array_equal(split.apply({}, jnp.ones((4, 2)), jnp.ones((4, 2))),
                                2 * np.ones((4, 2)))
  assert calls == [4]
  split.apply({}, jnp.ones((4, 2)), y=jnp.ones((2,)))   # not per example: split
  assert calls == [4, 2, 2]
