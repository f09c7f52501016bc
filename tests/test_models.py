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
