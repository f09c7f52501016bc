"""PPO on CartPole-v1 (gymnax), the environments stepped inside the compiled train step.

5 environments x 100 steps per iteration, 5 epochs of 5 minibatches, Adam 7.5e-4,
gradients clipped to global norm 0.5, entropy bonus 0.01 (rejax's tuned CartPole
settings). Evaluated every 2 iterations (1,000 environment steps) on 128 episodes sampled
from the policy, from fixed reset keys; 'solved' is an evaluation return of at least 475.

    python -m practice_jax.main --config=configs/cartpole_ppo.py --workdir=runs/cartpole_ppo

Result (bench/rl_cartpole.py, seeds 0, 1, 2): solved after 64,000, 51,000 and 51,000
environment steps (median 51,000; rejax's PPO with the same settings: median 78,000),
48 s median from launch with a cold compilation cache; return 500.0 at the end of seed
0's 100,000 steps. 2-core AMD EPYC CPU shared with other jobs (load average about 10),
jax 0.10.2, gymnax 1.0.1, 2026-12-01.
"""

from practice_jax.config_base import base_config
from practice_jax.tasks.rl import actor_critic_config


def get_config():
  config = base_config("ppo", "none")
  config.model = actor_critic_config(hidden=(64, 64), activation="tanh")
  config.task.env = "CartPole-v1"
  config.task.num_envs = 5
  config.task.rollout_length = 100
  config.task.epochs = 5
  config.task.num_minibatches = 5
  config.task.ent_coef = 0.01
  config.task.target_return = 475.0
  config.task.eval_episodes = 128        # sampled from the policy, as rejax evaluates
  config.task.eval_greedy = False
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 7.5e-4
  config.optimizer.grad_clip_norm = 0.5
  config.schedule.name = "constant"
  config.num_steps = 200                 # 100,000 environment steps
  config.eval_every_steps = 2
  config.log_every_steps = 2
  config.steps_per_dispatch = 2
  config.checkpoint_every_steps = 50
  return config
