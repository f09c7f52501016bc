"""Wall time and environment steps to solve CartPole-v1 (an evaluation return of at least
475): practice_jax's PPO beside rejax's PPO, same settings, same machine, same session.

    python bench/rl_cartpole.py [--seeds 0 1 2] [--budget 100000] [--json FILE]

Both run rejax's tuned CartPole settings (its configs/gymnax/cartpole.yaml): 5
environments x 100 steps per iteration, 5 epochs of 5 minibatches, Adam 7.5e-4, gradient
clip 0.5, gamma 0.99, GAE lambda 0.95, clip 0.2, entropy 0.01, value 0.5, tanh MLPs
64x64; evaluation every 1,000 environment steps on 128 episodes sampled from the policy
(rejax's evaluator; configs/cartpole_ppo.py evaluates so too). Each run is a fresh
process timed from just before its launch, so imports and compilation count
(practice_jax with the persistent compilation cache off); the time to solve is to the
first evaluation at or above 475, the environment steps are those trained before it.
The CPU seconds (user + system) of each process to its exit are given too: wall times
on a shared machine depend on the other load. Runs alternate (practice_jax, rejax,
practice_jax, ...); medians over the seeds. Not part of the tests.

Differences that remain, each library's own: rejax trains separate actor and critic
optimizers and clips each gradient element at 0.5 (practice_jax: one Adam over both
towers, global-norm clip 0.5), treats time-limit truncation as termination (practice_jax
bootstraps it) and evaluates from fresh keys each time (practice_jax: the same 128 reset
keys at every evaluation). rejax 0.1.3 expects gymnax's older 5-tuple step; the child
process adapts gymnax 1.x's step (done = terminated or truncated) without changing
anything else.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = 475.0
STEPS_PER_ITERATION = 500          # 5 environments x 100 steps
EVAL_EVERY = 1000                  # environment steps


def _cpu_s() -> float:
  """CPU seconds (user + system) of the finished child processes so far."""
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def practice_jax(seed: int, budget: int, logdir: str) -> dict:
  workdir = os.path.join(logdir, f"practice_jax_{seed}")
  cpu, launch = _cpu_s(), time.time()
  with open(workdir + ".log", "w", encoding="utf-8") as log:
    code = subprocess.call(
        [sys.executable, "-m", "practice_jax.main", "--config=configs/cartpole_ppo.py",
         f"--workdir={workdir}", "--compilation_cache=", f"--config.seed={seed}",
         f"--config.num_steps={budget // STEPS_PER_ITERATION}",
         f"--config.eval_every_steps={EVAL_EVERY // STEPS_PER_ITERATION}",
         "--config.task.eval_episodes=128", "--config.task.eval_greedy=False",
         "--config.plots=False"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
  exit_s = time.time() - launch
  if code != 0:
    raise SystemExit(f"practice_jax seed {seed} failed ({code}); log: {workdir}.log")
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    evaluations = [r for r in map(json.loads, f) if r["split"] == "validation"]
  points = [(r["step"] * STEPS_PER_ITERATION, r["episode_return"], r["time"] - launch)
            for r in evaluations]
  return _result("practice_jax", seed, points, exit_s, _cpu_s() - cpu)


def rejax(seed: int, budget: int, logdir: str) -> dict:
  cpu, launch = _cpu_s(), time.time()
  out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", str(seed),
                        "--budget", str(budget)], cwd=logdir, capture_output=True,
                       text=True)
  exit_s = time.time() - launch
  if out.returncode != 0:
    raise SystemExit(f"rejax seed {seed} failed:\n{out.stderr[-3000:]}")
  points = [(p["env_steps"], p["return"], p["time"] - launch)
            for p in map(json.loads, (l for l in out.stdout.splitlines()
                                      if l.startswith("{")))]
  return _result("rejax", seed, points, exit_s, _cpu_s() - cpu)


def _result(library: str, seed: int, points: list, exit_s: float, cpu_s: float) -> dict:
  solved = next((p for p in points if p[1] >= TARGET), None)
  return {"library": library, "seed": seed,
          "env_steps_to_solve": solved[0] if solved else None,
          "seconds_to_solve": round(solved[2], 2) if solved else None,
          "exit_s": round(exit_s, 2), "cpu_s": round(cpu_s, 2),
          "final_return": points[-1][1],
          "evaluations": len(points)}


def child(seed: int, budget: int) -> None:
  """One rejax run, printing a JSON line per evaluation (its time and environment
  steps, from inside the compiled training through a debug callback)."""
  import jax
  import jax.numpy as jnp
  import rejax
  from rejax.evaluate import evaluate

  class FiveTupleStep:
    """gymnax 1.x's environment with the 5-tuple step rejax 0.1.3 unpacks."""

    def __init__(self, env):
      self._env = env

    def __getattr__(self, name):       # everything but step is gymnax's own
      if name == "_env":               # (while deepcopy builds a copy)
        raise AttributeError(name)
      return getattr(self._env, name)

    def step(self, key, state, action, params=None):
      obs, state, reward, terminated, truncated, info = self._env.step(key, state, action,
                                                                       params)
      return obs, state, reward, jnp.logical_or(terminated, truncated), info

  import gymnax
  env, env_params = gymnax.make("CartPole-v1")
  env = FiveTupleStep(env)

  def record(step, mean_return):
    print(json.dumps({"time": time.time(), "env_steps": int(step),
                      "return": float(mean_return)}), flush=True)

  def eval_callback(algo, ts, rng):
    lengths, returns = evaluate(algo.make_act(ts), rng, env, env_params, 128,
                                env_params.max_steps_in_episode)
    jax.debug.callback(record, ts.global_step, returns.mean(), ordered=True)
    return lengths, returns

  algo = rejax.PPO.create(
      env=env, env_params=env_params, agent_kwargs={"activation": "tanh"},
      num_envs=5, num_steps=100, num_epochs=5, num_minibatches=5, learning_rate=7.5e-4,
      max_grad_norm=0.5, total_timesteps=budget, eval_freq=EVAL_EVERY, gamma=0.99,
      gae_lambda=0.95, clip_eps=0.2, ent_coef=0.01, vf_coef=0.5)
  algo = algo.replace(eval_callback=eval_callback)
  jax.block_until_ready(jax.jit(algo.train)(jax.random.PRNGKey(seed)))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--budget", type=int, default=100_000, help="environment steps")
  parser.add_argument("--libraries", default="practice_jax,rejax")
  parser.add_argument("--json", default="")
  parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child is not None:
    return child(args.child, args.budget)
  logdir = tempfile.mkdtemp(prefix="rl_cartpole_")
  print(f"logs and workdirs in {logdir}", flush=True)
  runners = {"practice_jax": practice_jax, "rejax": rejax}
  libraries = args.libraries.split(",")
  results = []
  for seed in args.seeds:
    for library in libraries:
      results.append(runners[library](seed, args.budget, logdir))
      print(json.dumps(results[-1]), flush=True)

  print(f"\n| library | env steps to {TARGET:g} (median) | seconds to {TARGET:g} "
        f"(median) | solved | seconds to exit (median) | CPU seconds to exit (median) |")
  print("|---|---|---|---|---|---|")
  for library in libraries:
    runs = [r for r in results if r["library"] == library]
    # An unsolved run counts as slower than every solved one (infinite).
    med = lambda key: statistics.median(
        math.inf if r[key] is None else r[key] for r in runs)
    show = lambda v: "-" if v == math.inf else f"{v:g}"
    solved = sum(r["env_steps_to_solve"] is not None for r in runs)
    print(f"| {library} | {show(med('env_steps_to_solve'))} | "
          f"{show(med('seconds_to_solve'))} | {solved}/{len(runs)} | "
          f"{statistics.median(r['exit_s'] for r in runs):g} | "
          f"{statistics.median(r['cpu_s'] for r in runs):g} |")
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump({"budget": args.budget, "target": TARGET, "runs": results}, f, indent=2)


if __name__ == "__main__":
  main()
