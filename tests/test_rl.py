"""PPO on gymnax environments (practice_jax/tasks/rl.py) through the one loop: the
environments are deterministic for a seed, a run resumed from a checkpoint ends bitwise
equal to an uninterrupted one, and bad settings are refused in one sentence."""

import chex
import jax
import numpy as np
import pytest

pytest.importorskip("gymnax")

from conftest import checkpointed_state, killed_copy, load_config  # noqa: E402
from practice_jax import train  # noqa: E402
from practice_jax.errors import UserError  # noqa: E402
from practice_jax.reporting import writers  # noqa: E402
from practice_jax.reporting.artifacts import Artifacts  # noqa: E402
from practice_jax.validation import validate  # noqa: E402


def _tiny(steps=40):
  """configs/cartpole_ppo.py shrunk to seconds: 16 environments x 16 steps, a small net
  and a larger learning rate, so that 40 iterations already learn."""
  config = load_config("cartpole_ppo")
  config.model.hidden = (32,)
  config.task.num_envs = 16
  config.task.rollout_length = 16
  config.task.epochs = 4
  config.task.num_minibatches = 2
  config.task.eval_episodes = 8
  config.optimizer.learning_rate = 3e-3
  config.num_steps = steps
  config.steps_per_dispatch = 2
  config.log_every_steps = 2
  config.eval_every_steps = 8
  config.checkpoint_every_steps = 2
  config.keep_checkpoints = 100
  config.plots = False
  return config


def test_the_environments_and_evaluation_are_deterministic_for_a_seed():
  exp = train.build(_tiny())
  task, rollout = exp.task, jax.jit(exp.task.rollout)
  state = task.init_state(exp.plan)
  chex.assert_trees_all_equal(state, train.build(_tiny()).task.init_state(exp.plan))
  key = jax.random.PRNGKey(5)
  first, again = rollout(state, key), rollout(state, key)
  chex.assert_trees_all_equal(first, again)
  moved, (obs, action, _, _, reward, _), _ = first
  chex.assert_shape(obs, (16, 16, 4))     # [rollout_length, num_envs, CartPole's 4]
  chex.assert_shape(reward, (16, 16))
  assert not np.array_equal(moved.obs, state.obs)      # the environments moved on
  other = rollout(state, jax.random.PRNGKey(6))
  assert not np.array_equal(other[1][1], action)       # another key, other actions
  seeded = _tiny()
  seeded.seed = 1
  assert not np.array_equal(task.init_state(exp.plan).obs,
                            train.build(seeded).task.init_state(exp.plan).obs)

  returns, lengths = task.play(state.params, 6, 0, False)   # sampled actions
  chex.assert_trees_all_equal((returns, lengths), task.play(state.params, 6, 0, False))
  chex.assert_shape(returns, (6,))
  # CartPole pays 1 per step: a return is its episode's length, ended by a fall.
  np.testing.assert_array_equal(returns, lengths.astype(np.float32))
  assert 0 < lengths.min() and lengths.max() < 500
  assert not np.array_equal(task.play(state.params, 6, 1, False)[0], returns)


def test_a_resumed_run_ends_bitwise_equal_to_an_uninterrupted_one_and_learns(tmp_path):
  config = _tiny(steps=40)
  full = train.train_and_evaluate(config, str(tmp_path / "full"))
  killed_copy(tmp_path / "full", tmp_path / "resumed", after_step=10)  # died after step 10
  resumed = train.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert resumed["final"] == full["final"]
  chex.assert_trees_all_equal(checkpointed_state(config, tmp_path / "full"),
                              checkpointed_state(config, tmp_path / "resumed"))
  strip = lambda records: [{k: v for k, v in r.items() if k != "time"} for r in records]
  records = writers.read_metrics(str(tmp_path / "full"))
  assert strip(writers.read_metrics(str(tmp_path / "resumed"))) == strip(records)

  # What the run reports: every PPO metric, evaluations at 0, 8, ..., 40, the return
  # monitored; 40 iterations lift the return far above the first policy's.
  assert full["steps"] == 40 and full["monitored_metric"] == "validation/episode_return"
  train_keys = set().union(*(r for r in records if r["split"] == "train"))
  assert {"policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction",
          "episode_return", "episode_length", "learning_rate"} <= train_keys
  evaluations = [r for r in records if r["split"] == "validation"]
  assert [r["step"] for r in evaluations] == [0, 8, 16, 24, 32, 40]
  assert all(r["episode_return"] == r["episode_length"] > 0 for r in evaluations)
  returns = [r["episode_return"] for r in evaluations]     # 8 sampled episodes each
  assert max(returns) > 200 and returns[-1] > 4 * returns[0]
  assert full["final"]["validation"]["episode_return"] == returns[-1]

  # The episode-return curve, through the artifacts writer.
  exp = train.build(config)
  state = checkpointed_state(config, tmp_path / "full")
  text = exp.task.artifacts(state, 40, Artifacts(str(tmp_path / "full"), True), final=True)
  assert "never reached 475" in text
  assert (tmp_path / "full" / "episode_return.png").stat().st_size > 1000


@pytest.mark.parametrize("key,value,message", [
    ("task.env", "CartPol-v1", "did you mean 'CartPole-v1'"),
    ("task.env", "Pendulum-v1", "continuous actions"),
    ("task.num_minibatches", 3, "must divide the 256 transitions"),
    ("task.gamma", 1.5, "config.task.gamma=1.5 must be in"),
    ("model.activation", "relux", "did you mean 'relu'"),
    ("model.name", "cnn", "trains an actor-critic"),
    ("parallel.mode", "pmap", "use mode='jit'"),
])
def test_bad_settings_are_one_sentence(key, value, message):
  config = _tiny()
  section, name = key.split(".")
  if key == "model.name":
    from practice_jax.config_base import model_config
    config.model = model_config("cnn")
  else:
    config[section][name] = value
  with pytest.raises(UserError, match=message):
    validate(config, 1)


def test_the_acrobot_config_is_valid():
  validate(load_config("acrobot_ppo"), 1)
