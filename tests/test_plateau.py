"""Reduce on plateau: the learning rate follows the validation results, through the
optimizer state (so a resumed run goes on at the reduced rate, exactly)."""

import chex
import jax
import jax.numpy as jnp
import optax
import pytest

from conftest import checkpointed_state, killed_copy, load_config, tiny
from practice_jax import optim, train
from practice_jax.reporting import writers
from practice_jax.validation import validate
from practice_jax.errors import UserError


def test_the_scale_multiplies_the_updates_and_is_set_from_outside():
  tx = optax.chain(optax.sgd(0.1), optim.scale_by_plateau())
  params = {"w": jnp.ones(3)}
  state = tx.init(params)
  assert optim.plateau_scale(state) == 1.0
  grads = {"w": jnp.full(3, 2.0)}
  full, _ = tx.update(grads, state, params)
  half, _ = tx.update(grads, optim.set_plateau_scale(state, 0.5), params)
  chex.assert_trees_all_close(half["w"], full["w"] * 0.5)
  assert optim.plateau_scale(optax.sgd(0.1).init(params)) is None


def _config():
  config = tiny(load_config("mnist_mlp"), epochs=4.0)   # 48 train examples: 6 steps/epoch
  config.model.hidden = (16,)
  config.eval_every_steps = 2
  config.checkpoint_every_steps = 2
  config.keep_checkpoints = 20
  config.schedule.name = "constant"
  config.schedule.plateau_factor = 0.5
  config.schedule.plateau_patience = 2
  config.schedule.plateau_min_scale = 0.1
  # No evaluation improves on the first by this much: every second one halves the rate.
  config.schedule.plateau_min_delta = 10.0
  return config


def test_the_rate_halves_after_each_plateau_and_a_resumed_run_is_exact(mock_tfds, tmp_path):
  config = _config()
  full = train.train_and_evaluate(config, str(tmp_path / "full"))
  assert full["steps"] == 24
  scales = {r["step"]: r["plateau_scale"] for r in writers.read_metrics(str(tmp_path / "full"))
            if "plateau_scale" in r}
  # Evaluations at steps 2, 4, ...: the first sets the best, then every second one
  # without improvement halves the scale, down to the floor of 0.1.
  assert scales[6] == 1.0 and scales[12] == 0.25, scales
  assert scales[24] == pytest.approx(0.1) and scales[20] == pytest.approx(0.1), scales
  assert optim.plateau_scale(checkpointed_state(config, tmp_path / "full")) == (
      pytest.approx(0.1))

  copy = killed_copy(tmp_path / "full", tmp_path / "resumed", after_step=8)
  (copy / "run.json").unlink()
  resumed = train.train_and_evaluate(config, str(copy))
  assert resumed["final"] == full["final"]
  chex.assert_trees_all_equal(checkpointed_state(config, copy).params,
                              checkpointed_state(config, tmp_path / "full").params)


@pytest.mark.parametrize("key,value,message", [
    ("plateau_factor", 1.5, "plateau_factor=1.5 must be in"),
    ("plateau_patience", 0, "plateau_patience must be >= 1"),
])
def test_bad_settings_are_one_sentence(key, value, message):
  config = _config()
  config.schedule[key] = value
  with pytest.raises(UserError, match=message):
    validate(config, jax.device_count())
