"""PPO on Acrobot-v1 (gymnax): a harder control task than CartPole.

Swing the two-link pendulum's tip above the bar: -1 per step until it gets there, at
most 500 steps; the reward says nothing until the first success, so a random policy's
episodes run long. 8 environments x 128 steps per iteration, 4 epochs of 4 minibatches,
Adam 7.5e-4 clipped to norm 0.5; evaluated every 10 iterations on 32 greedy episodes
from fixed reset keys. Gym calls -100 solved.

    python -m practice_jax.main --config=configs/acrobot_ppo.py --workdir=runs/acrobot_ppo

Result (seed 0): evaluation return -90.6 after 20,480 environment steps (the first at or
above -100; -215.1 before training), -79.1 at best, -81.8 after all 307,200 steps; 67 s
from launch to exit with a cold compilation cache, on the 2-core AMD EPYC CPU shared
with other jobs (load average about 10), jax 0.10.2, gymnax 1.0.1, 2026-12-01.
"""

from practice_jax.config_base import base_config
from practice_jax.tasks.rl import actor_critic_config


def get_config():
  config = base_config("ppo", "none")
  config.model = actor_critic_config(hidden=(64, 64), activation="tanh")
  config.task.env = "Acrobot-v1"
  config.task.num_envs = 8
  config.task.rollout_length = 128
  config.task.epochs = 4
  config.task.num_minibatches = 4
  config.task.ent_coef = 0.01
  config.task.target_return = -100.0
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 7.5e-4
  config.optimizer.grad_clip_norm = 0.5
  config.schedule.name = "constant"
  config.num_steps = 300                 # 307,200 environment steps
  config.eval_every_steps = 10
  config.log_every_steps = 10
  config.steps_per_dispatch = 10
  config.checkpoint_every_steps = 100
  return config
