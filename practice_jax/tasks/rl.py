"""Reinforcement learning: PPO (Schulman et al., 2017) on pure-JAX environments from
gymnax, with no dataset (config.data.name='none').

Each train step is one PPO iteration, compiled whole: `num_envs` environments, stepped
together (vmap) for `rollout_length` steps (lax.scan); advantages by GAE; then `epochs`
passes of `num_minibatches` clipped-surrogate updates over the shuffled rollout. The
environments' states, their last observations and the running episode returns are part
of the train state, so a checkpoint holds the whole experiment and a resumed run
continues bitwise where an uninterrupted one would (every key is a function of the seed
and the step). Episodes cut by the time limit (truncated, not terminated) are
bootstrapped from the value of the observation they ended in.

Metrics (train): mean return and length of the episodes completed in the logged window,
the policy and value losses, the entropy, the approximate KL divergence from the
rollout's policy and the fraction of clipped ratios. The evaluator (named `validation`,
as the loop's early stopping and best checkpoint expect by default) plays
`eval_episodes` episodes from fixed reset keys (the same ones at every evaluation, so
the numbers compare across steps), with the greedy policy or, with eval_greedy=False,
actions sampled from it, and reports their mean return (the monitored metric) and
length. At the end, episode_return.png shows both against the environment steps.
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from practice_jax import optim
from practice_jax.models import settings as settings_lib
from practice_jax.models.actor_critic import ActorCritic
from practice_jax.reporting import plots, writers
from practice_jax.state import INIT_STREAM, STEP_STREAM, stream_key
from practice_jax.tasks.base import HIGHER, LOWER, Evaluator, Metric, Task

ENV_STREAM = 3          # the environments' first resets (state.py has streams 0-2)
RETURN_PLOT = "episode_return.png"


def actor_critic_config(**settings) -> ml_collections.ConfigDict:
  """config.model for the ppo task: the actor-critic MLP's settings with their
  defaults, updated with `settings`."""
  values = {"hidden": (64, 64), "activation": "tanh"}
  unknown = sorted(set(settings) - set(values))
  if unknown:
    raise ValueError(f"actor_critic has no settings {unknown}; it has {sorted(values)}")
  values.update(settings)
  return ml_collections.ConfigDict({"name": "actor_critic", **values})


@functools.lru_cache(maxsize=None)
def make_env(name: str):
  """(environment, its parameters) of a gymnax environment name; one environment object
  per name, so the compiled functions that take it as a static argument are reused by
  every run of the process."""
  import gymnax        # imported here: only RL runs pay for it
  return gymnax.make(name)


def _check_env(name: str) -> str | None:
  """The problem with config.task.env, as one sentence, or None."""
  try:
    import gymnax
  except ImportError:
    return ("The ppo task steps gymnax environments, and gymnax is not installed: "
            "pip install 'gymnax>=1.0'.")
  if name not in gymnax.registered_envs:
    hint = settings_lib.did_you_mean(name, gymnax.registered_envs)
    return (f"Unknown gymnax environment config.task.env={name!r}: {hint}choose one of "
            f"{', '.join(gymnax.registered_envs)}.")
  env, params = make_env(name)
  if not isinstance(env.action_space(params), gymnax.environments.spaces.Discrete):
    return (f"config.task.env={name!r} has continuous actions; this PPO samples discrete "
            f"actions (CartPole-v1, Acrobot-v1, MountainCar-v0, the MinAtar games, ...).")
  return None


@flax.struct.dataclass
class PPOState:
  step: jax.Array               # int32: PPO iterations done
  params: Any
  opt_state: Any
  key: jax.Array                # base key of the per-step stream
  env_state: Any                # the num_envs environments' states (batched)
  obs: jax.Array                # [num_envs, ...] their current observations
  episode_return: jax.Array     # [num_envs] return of each running episode so far
  episode_length: jax.Array     # [num_envs] its length so far

  def step_key(self) -> jax.Array:
    return jax.random.fold_in(self.key, self.step)


class PPOTask(Task):
  DATA_KINDS = ("none",)
  METRICS = {"episode_return": HIGHER,
             # Longer is better on CartPole, worse on Acrobot: never monitored.
             "episode_length": Metric(True),
             "policy_loss": LOWER, "value_loss": LOWER, "entropy": Metric(True),
             "approx_kl": LOWER, "clip_fraction": LOWER}
  MONITOR = "validation/episode_return"
  OUTPUTS = (RETURN_PLOT,)

  @staticmethod
  def config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "ppo"
    c.env = "CartPole-v1"            # a gymnax environment with discrete actions
    c.num_envs = 5                   # environments stepped together
    c.rollout_length = 100           # steps of each per iteration
    c.epochs = 5                     # passes over each rollout
    c.num_minibatches = 5            # updates per pass (num_envs*rollout_length split)
    c.gamma = 0.99                   # discount
    c.gae_lambda = 0.95
    c.clip_eps = 0.2                 # PPO ratio clip (and value clip, if clip_value)
    c.clip_value = True
    c.vf_coef = 0.5
    c.ent_coef = 0.01
    c.normalize_advantages = True    # per minibatch
    c.eval_episodes = 32             # evaluation episodes, from fixed reset keys
    c.eval_seed = 0                  # their keys (independent of config.seed)
    c.eval_greedy = True             # evaluate the most likely action (else sample)
    c.target_return = 475.0          # "solved" (CartPole-v1): drawn, and its first step said
    return c

  @staticmethod
  def check(config: ml_collections.ConfigDict) -> str | None:
    t, m = config.task, config.model
    for key in ("num_envs", "rollout_length", "epochs", "num_minibatches",
                "eval_episodes"):
      if t[key] < 1:
        return f"config.task.{key}={t[key]} must be at least 1."
    if (t.num_envs * t.rollout_length) % t.num_minibatches:
      return (f"config.task.num_minibatches={t.num_minibatches} must divide the "
              f"{t.num_envs * t.rollout_length} transitions of a rollout (num_envs * "
              f"rollout_length).")
    for key in ("gamma", "gae_lambda"):
      if not 0.0 <= t[key] <= 1.0:
        return f"config.task.{key}={t[key]} must be in [0, 1]."
    for key in ("clip_eps", "vf_coef", "ent_coef"):
      if t[key] < 0:
        return f"config.task.{key}={t[key]} must be >= 0."
    if m.get("name") != "actor_critic":
      return (f"The ppo task trains an actor-critic, not config.model.name="
              f"{m.get('name')!r}: set config.model = "
              f"practice_jax.tasks.rl.actor_critic_config() (see configs/cartpole_ppo.py).")
    allowed = set(actor_critic_config()) - {"name"}
    for key in m:
      if key != "name" and key not in allowed:
        hint = settings_lib.did_you_mean(key, sorted(allowed))
        return (f"Model 'actor_critic' has no setting config.model.{key}: {hint}its "
                f"settings are {', '.join(sorted(allowed))}.")
    return (settings_lib.check({k: v for k, v in m.items() if k != "name"},
                               ActorCritic.SETTINGS)
            or _check_env(t.env) or Task.check(config))

  def __init__(self, config: ml_collections.ConfigDict, source, parallel):
    super().__init__(config, source, parallel)
    t = config.task
    self.env, self.env_params = make_env(t.env)
    self.num_actions = int(self.env.action_space(self.env_params).n)
    self.obs_shape = tuple(self.env.observation_space(self.env_params).shape)
    self.model = ActorCritic(self.num_actions, tuple(config.model.hidden),
                             config.model.activation)
    self.updates_per_step = t.epochs * t.num_minibatches
    self.env_steps_per_step = t.num_envs * t.rollout_length

  def title(self) -> str:
    return f"PPO on {self.config.task.env}"

  def metadata(self) -> dict:
    return {"env": self.config.task.env, "num_actions": self.num_actions,
            "obs_shape": list(self.obs_shape)}

  def init_state(self, plan: optim.Plan) -> PPOState:
    # The optimizer steps epochs * num_minibatches times per iteration: its schedule
    # spans all of them, and is logged per iteration.
    self.tx, schedule = optim.build(
        self.config.optimizer, self.config.schedule,
        optim.Plan(plan.total_steps * self.updates_per_step, None))
    self.schedules = {"learning_rate": lambda s: schedule(s * self.updates_per_step)}
    seed, n = self.config.seed, self.config.task.num_envs
    params, obs, env_state = _initial(stream_key(seed, INIT_STREAM),
                                      stream_key(seed, ENV_STREAM), self.env_params,
                                      model=self.model, env=self.env, num_envs=n)
    return PPOState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=self.tx.init(params), key=stream_key(seed, STEP_STREAM),
                    env_state=env_state, obs=obs,
                    episode_return=jnp.zeros((n,), jnp.float32),
                    episode_length=jnp.zeros((n,), jnp.int32))

  # -- one PPO iteration ------------------------------------------------------------

  def _apply(self, params, obs):
    return self.model.apply({"params": params}, obs)

  def rollout(self, state: PPOState, key: jax.Array):
    """`rollout_length` steps of every environment with the current policy:
    (state with the environments moved on, transitions [T, num_envs], episode sums)."""
    t = self.config.task
    step_env = jax.vmap(self.env.step, in_axes=(0, 0, 0, None))

    def one_step(carry, i):
      env_state, obs, ep_return, ep_length = carry
      act_key, env_key = jax.random.split(jax.random.fold_in(key, i))
      logits, value = self._apply(state.params, obs)
      action = jax.random.categorical(act_key, logits)
      log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], 1)[:, 0]
      next_obs, env_state, reward, terminated, truncated, info = step_env(
          jax.random.split(env_key, t.num_envs), env_state, action, self.env_params)
      reward = reward.astype(jnp.float32)
      done = jnp.logical_or(terminated, truncated)
      # A time limit is not an end of the task: bootstrap from where the episode stopped.
      cut = jnp.logical_and(truncated, jnp.logical_not(terminated))
      _, final_value = self._apply(state.params, info["final_observation"])
      target_reward = reward + t.gamma * jnp.where(cut, final_value, 0.0)
      ep_return, ep_length = ep_return + reward, ep_length + 1
      finished = (jnp.sum(jnp.where(done, ep_return, 0.0)),
                  jnp.sum(jnp.where(done, ep_length, 0)), jnp.sum(done))
      carry = (env_state, next_obs, jnp.where(done, 0.0, ep_return),
               jnp.where(done, 0, ep_length))
      return carry, ((obs, action, log_prob, value, target_reward, done), finished)

    carry = (state.env_state, state.obs, state.episode_return, state.episode_length)
    carry, (transitions, finished) = jax.lax.scan(one_step, carry,
                                                  jnp.arange(t.rollout_length))
    env_state, obs, ep_return, ep_length = carry
    state = state.replace(env_state=env_state, obs=obs, episode_return=ep_return,
                          episode_length=ep_length)
    returns, lengths, episodes = (jnp.sum(x) for x in finished)
    episodes_sums = {"episode_return_sum": returns,
                     "episode_length_sum": lengths.astype(jnp.float32),
                     "episodes": episodes.astype(jnp.float32)}
    return state, transitions, episodes_sums

  def advantages(self, values, rewards, dones, last_value):
    """GAE(gamma, lambda) over [T, num_envs]: (advantages, value targets)."""
    t = self.config.task

    def back(carry, x):
      next_advantage, next_value = carry
      value, reward, done = x
      live = 1.0 - done.astype(jnp.float32)
      delta = reward + t.gamma * next_value * live - value
      advantage = delta + t.gamma * t.gae_lambda * live * next_advantage
      return (advantage, value), advantage

    _, adv = jax.lax.scan(back, (jnp.zeros_like(last_value), last_value),
                          (values, rewards, dones), reverse=True)
    return adv, adv + values

  def loss(self, params, batch):
    """The clipped-surrogate PPO loss of a minibatch and its diagnostics."""
    t = self.config.task
    logits, value = self._apply(params, batch["obs"])
    log_probs = jax.nn.log_softmax(logits)
    log_prob = jnp.take_along_axis(log_probs, batch["action"][:, None], 1)[:, 0]
    log_ratio = log_prob - batch["log_prob"]
    ratio = jnp.exp(log_ratio)
    adv = batch["advantage"]
    if t.normalize_advantages:
      adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    policy_loss = -jnp.mean(jnp.minimum(ratio * adv,
                                        jnp.clip(ratio, 1 - t.clip_eps, 1 + t.clip_eps) * adv))
    value_loss = jnp.square(value - batch["target"])
    if t.clip_value:
      clipped = batch["value"] + jnp.clip(value - batch["value"], -t.clip_eps, t.clip_eps)
      value_loss = jnp.maximum(value_loss, jnp.square(clipped - batch["target"]))
    value_loss = 0.5 * jnp.mean(value_loss)
    entropy = -jnp.mean(jnp.sum(jnp.exp(log_probs) * log_probs, -1))
    total = policy_loss + t.vf_coef * value_loss - t.ent_coef * entropy
    return total, {"policy_loss": policy_loss, "value_loss": value_loss,
                   "entropy": entropy,
                   "approx_kl": jnp.mean((ratio - 1.0) - log_ratio),
                   "clip_fraction": jnp.mean(jnp.abs(ratio - 1.0) > t.clip_eps)}

  def train_step(self, state: PPOState, batch: dict) -> tuple[PPOState, dict]:
    t = self.config.task
    rollout_key, shuffle_key = jax.random.split(state.step_key())
    state, (obs, action, log_prob, value, reward, done), episodes = self.rollout(
        state, rollout_key)
    _, last_value = self._apply(state.params, state.obs)
    advantage, target = self.advantages(value, reward, done, last_value)
    flat = lambda x: x.reshape((-1,) + x.shape[2:])
    data = {"obs": flat(obs), "action": flat(action), "log_prob": flat(log_prob),
            "value": flat(value), "advantage": flat(advantage), "target": flat(target)}
    size = self.env_steps_per_step

    def epoch(carry, k):
      order = jax.random.permutation(jax.random.fold_in(shuffle_key, k), size)
      minibatches = jax.tree.map(
          lambda x: x[order].reshape((t.num_minibatches, -1) + x.shape[1:]), data)

      def update(carry, minibatch):
        params, opt_state = carry
        grads, stats = jax.grad(self.loss, has_aux=True)(params, minibatch)
        updates, opt_state = self.tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), stats
      return jax.lax.scan(update, carry, minibatches)

    (params, opt_state), stats = jax.lax.scan(epoch, (state.params, state.opt_state),
                                              jnp.arange(t.epochs))
    sums = {f"{k}_sum": jnp.mean(v) for k, v in stats.items()}
    sums.update(episodes, count=jnp.float32(1.0))
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), sums

  def summarize(self, sums: dict) -> dict[str, float]:
    """Episode means over the episodes completed in the window (absent when none
    was), the rest as means over its iterations."""
    get = lambda k: float(np.asarray(sums[k]))
    out = {}
    if get("episodes") > 0:
      out["episode_return"] = get("episode_return_sum") / get("episodes")
      out["episode_length"] = get("episode_length_sum") / get("episodes")
    n = max(get("count"), 1.0)
    for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"):
      out[k] = get(f"{k}_sum") / n
    return out

  # -- evaluation -------------------------------------------------------------------

  def play(self, params, num_episodes: int, seed: int, greedy: bool = True):
    """Returns and lengths [num_episodes] of whole episodes played with `params` from
    keys of `seed` alone (each runs until it ends or reaches the time limit)."""
    return _play(params, self.env_params, seed, model=self.model, env=self.env,
                 num_episodes=num_episodes, greedy=greedy,
                 steps=int(self.env_params.max_steps_in_episode))

  def evaluators(self) -> dict[str, Evaluator]:
    t = self.config.task

    def run(state):
      ret, length = jax.device_get(self.play(state.params, t.eval_episodes, t.eval_seed,
                                             t.eval_greedy))
      return {"episode_return": float(np.mean(ret)),
              "episode_length": float(np.mean(length))}
    return {"validation": Evaluator(run)}

  # -- the return curve -------------------------------------------------------------

  def artifacts(self, state: PPOState, step: int, out, final: bool) -> str:
    if not final or not out.active:
      return ""
    t = self.config.task
    records = writers.read_metrics(out.workdir)
    reached = [r["step"] for r in records if r.get("split") == "validation"
               and r.get("episode_return", -np.inf) >= t.target_return]
    evaluation = (f"evaluation ({t.eval_episodes} "
                  f"{'greedy' if t.eval_greedy else 'sampled'} episodes)")
    out.figure(RETURN_PLOT, lambda path: plot_returns(
        records, path, self.env_steps_per_step, t.target_return, evaluation,
        title=f"{self.title()} (seed {self.config.seed})"))
    if not reached:
      return f"The evaluation return never reached {t.target_return:g}."
    return (f"The evaluation return first reached {t.target_return:g} at step {reached[0]} "
            f"({reached[0] * self.env_steps_per_step:,} environment steps).")


# Compiled once per (model, environment, sizes) in a process, whichever task asks.

@functools.partial(jax.jit, static_argnames=("model", "env", "num_envs"))
def _initial(init_key, env_key, env_params, *, model, env, num_envs):
  """The network's parameters and the environments' first observations and states."""
  obs_shape = env.observation_space(env_params).shape
  params = model.init(init_key, jnp.zeros((1,) + tuple(obs_shape)))["params"]
  obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(
      jax.random.split(env_key, num_envs), env_params)
  return params, obs, env_state


@functools.partial(jax.jit, static_argnames=("model", "env", "num_episodes", "greedy",
                                              "steps"))
def _play(params, env_params, seed, *, model, env, num_episodes, greedy, steps):
  base = jax.random.PRNGKey(seed)
  obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(
      jax.random.split(jax.random.fold_in(base, 0), num_episodes), env_params)

  def one_step(carry, i):
    env_state, obs, running, ret, length = carry
    act_key, env_key = jax.random.split(jax.random.fold_in(jax.random.fold_in(base, 1), i))
    logits, _ = model.apply({"params": params}, obs)
    action = jnp.argmax(logits, -1) if greedy else jax.random.categorical(act_key, logits)
    obs, env_state, reward, terminated, truncated, _ = jax.vmap(
        env.step, in_axes=(0, 0, 0, None))(
            jax.random.split(env_key, num_episodes), env_state, action, env_params)
    ret = ret + jnp.where(running, reward.astype(jnp.float32), 0.0)
    length = length + running.astype(jnp.int32)
    running = jnp.logical_and(running, jnp.logical_not(terminated | truncated))
    return (env_state, obs, running, ret, length), None

  init = (env_state, obs, jnp.ones((num_episodes,), bool),
          jnp.zeros((num_episodes,), jnp.float32), jnp.zeros((num_episodes,), jnp.int32))
  (_, _, _, ret, length), _ = jax.lax.scan(one_step, init, jnp.arange(steps))
  return ret, length


def plot_returns(records: list[dict], path: str, env_steps_per_step: int,
                 target: float | None = None, evaluation: str = "evaluation",
                 title: str = "") -> None:
  """Episode return against environment steps: the training episodes completed in each
  logged window (a line) and the evaluation episodes (points), with the target."""
  plt = plots.plt          # pyplot with the Agg backend
  fig, ax = plt.subplots(figsize=(7, 4.2))
  for split, style in (("train", {"color": "tab:blue", "linewidth": 1.2}),
                       ("validation", {"color": "tab:orange", "marker": "o",
                                       "markersize": 3})):
    points = [(r["step"] * env_steps_per_step, r["episode_return"]) for r in records
              if r.get("split") == split and "episode_return" in r]
    if points:
      x, y = zip(*points)
      ax.plot(x, y, label="training episodes" if split == "train" else evaluation,
              **style)
  if target is not None:
    ax.axhline(target, color="0.5", linestyle="--", linewidth=0.8,
               label=f"target {target:g}")
  ax.set_xlabel("environment steps")
  ax.set_ylabel("mean episode return")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  if title:
    ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
