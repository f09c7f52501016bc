"""Experiments of other shapes than a classifier, each one class plus one ``register``
line, run by the unchanged loop in tests/test_seam.py:

- ``TinyGAN``: two models and two optimizers in one state, on a registered in-memory
  source of synthetic points;
- ``GeneratedRegression``: no dataset at all: the data is made inside the step from the
  step's key;
- ``Distillation``: the state carries a frozen second network (a teacher), and the data
  streams through grain (``stream_points``).

They are also the worked examples of docs/extending in the README.
"""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from practice_jax import data, optim, tasks
from practice_jax.data.base import Entry
from practice_jax.data.in_memory import ArraySource
from practice_jax.data.streaming import StreamingSource
from practice_jax.state import INIT_STREAM, STEP_STREAM, TrainState, stream_key
from practice_jax.tasks.base import LOWER, Evaluator, Task, mean_metrics


# -- data sources ------------------------------------------------------------------------

def _points_config(name: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({"name": name, "num_points": 256})


def _points(cfg) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(1234)
  points = rng.normal(3.0, 0.5, (cfg.num_points + 64, 2)).astype(np.float32)
  return points[:cfg.num_points], points[cfg.num_points:]


def _check_points(cfg) -> str | None:
  return None if cfg.num_points >= 16 else f"config.data.num_points={cfg.num_points} must be at least 16."


def _in_memory_points(cfg, seed):
  train, validation = _points(cfg)
  return ArraySource({"x": train}, {"validation": {"x": validation}}, {}, seed)


def _streamed_points(cfg, seed):
  train, validation = _points(cfg)
  return StreamingSource([{"x": p} for p in train], {"validation": {"x": validation}}, {},
                         seed, threads=2, prefetch=4)


data.register("points", Entry("points", _points_config, _check_points, _in_memory_points,
                              lambda cfg, info: _in_memory_points(cfg, 0)))
data.register("stream_points", Entry("points", _points_config, _check_points,
                                     _streamed_points, lambda cfg, info: _streamed_points(cfg, 0)))


class MLP(nn.Module):
  width: int = 16
  out: int = 1

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.out)(nn.relu(nn.Dense(self.width)(x)))


def _count(tree) -> int:
  return sum(int(np.prod(np.shape(p))) for p in jax.tree.leaves(tree))


# -- a GAN: two models, two optimizers -----------------------------------------------------

@flax.struct.dataclass
class GANState:
  step: jax.Array
  g_params: Any
  d_params: Any
  g_opt: Any
  d_opt: Any
  key: jax.Array


@tasks.register
class TinyGAN(Task):
  DATA_KINDS = ("points",)
  METRICS = {"d_loss": LOWER, "g_loss": LOWER, "mean_gap": LOWER}
  MONITOR = "validation/mean_gap"

  @staticmethod
  def config():
    return ml_collections.ConfigDict({"name": "tiny_gan", "latent": 4})

  def __init__(self, config, source, parallel):
    super().__init__(config, source, parallel)
    self.generator, self.discriminator = MLP(out=2), MLP(out=1)

  def title(self):
    return f"tiny GAN on {self.config.data.name}"

  def num_parameters(self, state):
    return _count((state.g_params, state.d_params))

  def init_state(self, plan):
    self.g_tx, g_schedule = optim.build(self.config.optimizer, self.config.schedule, plan)
    self.d_tx, d_schedule = optim.build(self.config.optimizer, self.config.schedule, plan)
    self.schedules = {"g_learning_rate": g_schedule, "d_learning_rate": d_schedule}
    g_key, d_key = jax.random.split(stream_key(self.config.seed, INIT_STREAM))
    g = self.generator.init(g_key, jnp.zeros((1, self.config.task.latent)))["params"]
    d = self.discriminator.init(d_key, jnp.zeros((1, 2)))["params"]
    return GANState(jnp.zeros((), jnp.int32), g, d, self.g_tx.init(g), self.d_tx.init(d),
                    stream_key(self.config.seed, STEP_STREAM))

  def train_step(self, state, batch):
    real = batch["x"]
    z = jax.random.normal(jax.random.fold_in(state.key, state.step),
                          (real.shape[0], self.config.task.latent))
    bce = optax.sigmoid_binary_cross_entropy

    def d_loss(d_params):
      fake = self.generator.apply({"params": state.g_params}, z)
      real_logits = self.discriminator.apply({"params": d_params}, real)
      fake_logits = self.discriminator.apply({"params": d_params}, fake)
      return bce(real_logits, 1.0).mean() + bce(fake_logits, 0.0).mean()

    def g_loss(g_params):
      fake = self.generator.apply({"params": g_params}, z)
      return bce(self.discriminator.apply({"params": d_params}, fake), 1.0).mean()

    dl, d_grads = jax.value_and_grad(d_loss)(state.d_params)
    d_updates, d_opt = self.d_tx.update(d_grads, state.d_opt, state.d_params)
    d_params = optax.apply_updates(state.d_params, d_updates)
    gl, g_grads = jax.value_and_grad(g_loss)(state.g_params)
    g_updates, g_opt = self.g_tx.update(g_grads, state.g_opt, state.g_params)
    new = state.replace(step=state.step + 1, d_params=d_params, d_opt=d_opt, g_opt=g_opt,
                        g_params=optax.apply_updates(state.g_params, g_updates))
    return new, {"d_loss_sum": dl, "g_loss_sum": gl, "count": jnp.float32(1.0)}

  def summarize(self, sums):
    return mean_metrics(sums)

  def evaluators(self):
    real_mean = self.source.eval_splits["validation"]["x"].mean(0)
    z = jax.random.normal(jax.random.key(7), (256, self.config.task.latent))
    sample = jax.jit(lambda g: self.generator.apply({"params": g}, z))

    def run(state):
      fake_mean = np.asarray(sample(state.g_params)).mean(0)
      return {"mean_gap": float(np.abs(fake_mean - real_mean).mean())}
    return {"validation": Evaluator(run)}


# -- no dataset: the data is made inside the step -----------------------------------------

@tasks.register
class GeneratedRegression(Task):
  """Fits y = 2x - 1 on points drawn inside the step from the step's key."""
  DATA_KINDS = ("none",)
  METRICS = {"mse": LOWER}
  MONITOR = "validation/mse"

  @staticmethod
  def config():
    return ml_collections.ConfigDict({"name": "generated_regression", "batch": 32})

  def __init__(self, config, source, parallel):
    super().__init__(config, source, parallel)
    self.model = MLP(width=8)

  def title(self):
    return "regression on generated data"

  def init_state(self, plan):
    self.tx, schedule = optim.build(self.config.optimizer, self.config.schedule, plan)
    self.schedules = {"learning_rate": schedule}
    params = self.model.init(stream_key(self.config.seed, INIT_STREAM), jnp.zeros((1, 1)))
    return TrainState(jnp.zeros((), jnp.int32), params["params"],
                      self.tx.init(params["params"]), {},
                      stream_key(self.config.seed, STEP_STREAM))

  def _mse(self, params, x):
    return jnp.mean((self.model.apply({"params": params}, x) - (2 * x - 1)) ** 2)

  def train_step(self, state, batch):
    assert batch == {}
    x = jax.random.uniform(state.step_key(), (self.config.task.batch, 1), minval=-1.0)
    loss, grads = jax.value_and_grad(self._mse)(state.params, x)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    return (state.replace(step=state.step + 1, opt_state=opt_state,
                          params=optax.apply_updates(state.params, updates)),
            {"mse_sum": loss, "count": jnp.float32(1.0)})

  def summarize(self, sums):
    return mean_metrics(sums)

  def evaluators(self):
    x = jnp.linspace(-1.0, 1.0, 64)[:, None]
    mse = jax.jit(lambda params: self._mse(params, x))
    return {"validation": Evaluator(lambda state: {"mse": float(mse(state.params))})}


# -- a frozen second network in the state -------------------------------------------------

@flax.struct.dataclass
class StudentState:
  step: jax.Array
  params: Any
  opt_state: Any
  teacher: Any          # never updated: no optimizer touches it
  key: jax.Array


@tasks.register
class Distillation(Task):
  """A small student learns to match a frozen teacher's outputs on streamed points."""
  DATA_KINDS = ("points",)
  METRICS = {"gap": LOWER}
  MONITOR = "validation/gap"

  @staticmethod
  def config():
    return ml_collections.ConfigDict({"name": "distillation"})

  def __init__(self, config, source, parallel):
    super().__init__(config, source, parallel)
    self.teacher, self.student = MLP(width=32, out=3), MLP(width=8, out=3)

  def title(self):
    return f"distillation on {self.config.data.name}"

  def init_state(self, plan):
    self.tx, schedule = optim.build(self.config.optimizer, self.config.schedule, plan)
    self.schedules = {"learning_rate": schedule}
    s_key, t_key = jax.random.split(stream_key(self.config.seed, INIT_STREAM))
    params = self.student.init(s_key, jnp.zeros((1, 2)))["params"]
    teacher = self.teacher.init(t_key, jnp.zeros((1, 2)))["params"]
    return StudentState(jnp.zeros((), jnp.int32), params, self.tx.init(params), teacher,
                        stream_key(self.config.seed, STEP_STREAM))

  def _gap(self, params, teacher, x):
    target = jax.lax.stop_gradient(self.teacher.apply({"params": teacher}, x))
    return jnp.mean((self.student.apply({"params": params}, x) - target) ** 2)

  def train_step(self, state, batch):
    loss, grads = jax.value_and_grad(self._gap)(state.params, state.teacher, batch["x"])
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    return (state.replace(step=state.step + 1, opt_state=opt_state,
                          params=optax.apply_updates(state.params, updates)),
            {"gap_sum": loss, "count": jnp.float32(1.0)})

  def summarize(self, sums):
    return mean_metrics(sums)

  def evaluators(self):
    x = jnp.asarray(self.source.eval_splits["validation"]["x"])
    gap = jax.jit(lambda s: self._gap(s.params, s.teacher, x))
    return {"validation": Evaluator(lambda state: {"gap": float(gap(state))})}
