"""Adversarial robustness: FGSM and PGD (practice_jax/attacks.py) against hand-checkable
facts, the classification task's attack evaluators and PGD adversarial training, and a
run through the real loop that writes robustness.png."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import array_task, image_info, load_config, tiny
from practice_jax import attacks, optim, train
from practice_jax.errors import UserError
from practice_jax.reporting import writers
from practice_jax.validation import validate

PLAN = optim.Plan(total_steps=100, steps_per_epoch=10)
EPS = 0.1


def _linear_losses(images, labels, seed=0):
  """Per-example cross-entropy of a random linear classifier: convex in the pixels."""
  w = jax.random.normal(jax.random.key(seed), (images[0].size, 3))
  return lambda x: optax.softmax_cross_entropy_with_integer_labels(
      x.reshape(len(x), -1) @ w, labels)


def _images(n=16, shape=(6, 6, 1), seed=1):
  x = jax.random.uniform(jax.random.key(seed), (n,) + shape)
  return x.at[:, 0].set(0.0).at[:, 1].set(1.0)      # rows on both edges of the range


def _within(adv, images, epsilon):
  assert float(jnp.max(jnp.abs(adv - images))) <= epsilon + 1e-6
  assert float(jnp.min(adv)) >= 0.0 and float(jnp.max(adv)) <= 1.0


def test_fgsm_raises_the_loss_within_epsilon_and_the_pixel_range():
  images, labels = _images(), jnp.arange(16) % 3
  losses = _linear_losses(images, labels)
  adv = jax.jit(attacks.fgsm, static_argnums=0)(losses, images, EPS)
  _within(adv, images, EPS)
  # Convex loss, step along the gradient's sign (clipped at the edges): no loss falls.
  assert bool(jnp.all(losses(adv) >= losses(images) - 1e-6))
  assert float(losses(adv).mean()) > float(losses(images).mean()) + 0.1
  moved = np.abs(np.asarray(adv - images))
  np.testing.assert_allclose(moved[:, 2:].max(), EPS, rtol=1e-5)   # full steps inside
  assert moved[:, 0].max() <= EPS and (np.asarray(adv)[:, 0] >= 0).all()


def _mlp_losses(images, labels, seed=0):
  """Per-example cross-entropy of a random two-layer tanh network: not convex."""
  k1, k2 = jax.random.split(jax.random.key(seed))
  w1 = jax.random.normal(k1, (images[0].size, 32)) / 2
  w2 = jax.random.normal(k2, (32, 3)) * 2
  return lambda x: optax.softmax_cross_entropy_with_integer_labels(
      jnp.tanh(x.reshape(len(x), -1) @ w1) @ w2, labels)


@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_is_at_least_as_strong_as_fgsm_and_stays_in_the_ball(random_start):
  images, labels = _images(n=64), jnp.arange(64) % 3
  losses = _mlp_losses(images, labels)
  noise = attacks.uniform_noise(jax.random.key(2), images.shape) if random_start else None
  fgsm, pgd = jax.jit(attacks.fgsm, static_argnums=0), jax.jit(
      attacks.pgd, static_argnums=(0, 3, 4, 6))
  adv_fgsm = fgsm(losses, images, EPS)
  adv_pgd = pgd(losses, images, EPS, 10, EPS / 3, noise)
  _within(adv_pgd, images, EPS)
  _within(adv_fgsm, images, EPS)
  clean, fgsm_loss, pgd_loss = (float(losses(x).mean())
                                for x in (images, adv_fgsm, adv_pgd))
  assert clean < fgsm_loss <= pgd_loss
  unrolled = pgd(losses, images, EPS, 10, EPS / 3, noise, True)
  chex.assert_trees_all_close(unrolled, adv_pgd, atol=1e-6)
  # One PGD step of size epsilon from the images is FGSM.
  chex.assert_trees_all_close(pgd(losses, images, EPS, 1, EPS), adv_fgsm)


def _bands(n, seed):
  """8x8 images whose class is the bright band (rows 0-2, 3-5 or 6-7), with noise."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 3, n).astype(np.int32)
  images = rng.integers(0, 40, (n, 8, 8, 1))
  for i, label in enumerate(labels):
    images[i, 3 * label:3 * label + 3] += 80
  return {"image": images.astype(np.uint8), "label": labels}


def _config(validation_size=None, **task):
  config = load_config("mnist")
  config.model.update({"features": (4,), "pools": ("avg",), "dense": (16,)})
  config.eval_batch_size = 16
  config.schedule.name = "constant"
  config.optimizer.learning_rate = 1e-2
  if validation_size is not None:
    config.data.validation_size = validation_size
  for key, value in task.items():
    config.task[key].update(value)
  return config


def _trained(config, steps=40):
  train_split = _bands(160, 0)
  task = array_task(config, train_split, {"test": _bands(40, 1)}, image_info(3, (8, 8, 1)))
  state = task.init_state(PLAN)
  step = jax.jit(task.train_step)
  for i in range(steps):
    state, metrics = step(state, jax.tree.map(lambda a: a[i % 10 * 16:][:16], train_split))
  return task, state, metrics


def test_the_task_evaluates_robust_accuracy_pgd_at_least_as_strong_as_fgsm():
  attack = {"methods": ("fgsm", "pgd"), "epsilons": (0.1, 0.2), "steps": 10,
            "step_size": 0.05}
  task, state, _ = _trained(_config(attacks=attack))
  evaluators = task.evaluators()
  assert set(evaluators) == {"test", "fgsm_eps0.1", "fgsm_eps0.2", "pgd_eps0.1",
                             "pgd_eps0.2"}
  assert not any(evaluators[n].periodic for n in evaluators)   # once, at the end
  results = {name: e.run(state) for name, e in evaluators.items()}
  assert results["test"]["accuracy"] > 0.9                         # it learned the bands
  for eps in ("0.1", "0.2"):
    fgsm, pgd = results[f"fgsm_eps{eps}"], results[f"pgd_eps{eps}"]
    assert results["test"]["loss"] < fgsm["loss"] <= pgd["loss"]
    assert pgd["accuracy"] <= fgsm["accuracy"] <= results["test"]["accuracy"]
  assert results["pgd_eps0.1"]["accuracy"] < 0.9                   # not robust,
  assert results["pgd_eps0.2"]["accuracy"] < results["pgd_eps0.1"]["accuracy"]  # less so
  again = evaluators["pgd_eps0.2"].run(state)                       # fixed random starts
  assert again == results["pgd_eps0.2"]


def test_by_default_training_is_the_plain_step_and_no_attack_is_evaluated():
  config = _config()
  assert config.task.adversarial_training.epsilon == 0.0 and not config.task.attacks.methods
  task = array_task(config, _bands(32, 0), {"test": _bands(8, 1)}, image_info(3, (8, 8, 1)))
  assert set(task.evaluators()) == {"test"}
  state = task.init_state(PLAN)
  batch = jax.tree.map(lambda a: a[:16], _bands(32, 0))
  new_state, metrics = jax.jit(task.train_step)(state, batch)

  def plain_step(state, batch):      # the classification step written out by hand
    images = (batch["image"].astype(jnp.float32) / 255.0 - task.mean) / task.std
    def loss_fn(params):
      logits = task.model.apply({"params": params}, images, train=True)
      return optax.softmax_cross_entropy(logits, optax.smooth_labels(
          jax.nn.one_hot(batch["label"], 3), 0.0)).mean(), logits
    grads, logits = jax.grad(loss_fn, has_aux=True)(state.params)
    updates, _ = task.tx.update(grads, state.opt_state, state.params)
    return optax.apply_updates(state.params, updates), logits

  params, logits = jax.jit(plain_step)(state, batch)
  chex.assert_trees_all_equal(new_state.params, params)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
  assert float(metrics["loss_sum"]) == float(jnp.sum(losses))


def test_adversarial_training_trains_on_pgd_examples():
  adversarial = {"epsilon": 0.2, "steps": 2, "step_size": 0.1}
  task = array_task(_config(adversarial_training=adversarial), _bands(16, 0),
                    {"test": _bands(8, 1)}, image_info(3, (8, 8, 1)))
  state = task.init_state(PLAN)
  batch = _bands(16, 0)
  clean = jax.jit(task.eval_step)(state, {**batch, "mask": np.ones(16, np.float32)})
  new_state, attacked = jax.jit(task.train_step)(state, batch)
  # The same parameters, reported on the batch's PGD examples: a higher loss.
  assert float(attacked["loss_sum"]) > float(clean["loss_sum"]) + 0.5
  assert int(new_state.step) == int(state.step) + 1
  assert bool(jnp.all(jnp.isfinite(jax.tree.leaves(new_state.params)[0])))


@pytest.mark.parametrize("setting, message", [
    ({"attacks": {"methods": ("pdg",), "epsilons": (0.1,)}}, "did you mean 'pgd'"),
    ({"attacks": {"methods": ("pgd",)}}, "needs both methods"),
    ({"attacks": {"methods": ("fgsm",), "epsilons": (8,)}}, "must be in (0, 1]"),
    ({"attacks": {"methods": ("pgd",), "epsilons": (0.1,), "steps": 0}}, "positive"),
    ({"adversarial_training": {"epsilon": 0.3, "step_size": 0.0}}, "positive"),
    ({"attacks": {"methods": ("fgsm",), "epsilons": (0.1,), "split": "validation"},
      "validation_size": 0}, "holds out no validation split"),
])
def test_a_bad_attack_setting_is_one_sentence(setting, message):
  with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")
                     .replace("[", r"\[").replace("]", r"\]")):
    validate(_config(**setting), 1)


def test_the_experiment_configs_are_valid():
  for name in ("mnist_adversarial", "mnist_pgd_training"):
    config = load_config(name)
    validate(config, 1)
    assert tuple(config.task.attacks.epsilons) == (0.1, 0.2, 0.3)
  assert load_config("mnist_pgd_training").task.adversarial_training.epsilon == 0.3
  assert load_config("mnist_adversarial").task.adversarial_training.epsilon == 0.0


def test_a_run_with_attacks_and_adversarial_training_writes_the_robustness_plot(
    mock_tfds, tmp_path, capsys):
  config = tiny(load_config("mnist_pgd_training"), epochs=0.5)      # 3 steps
  config.model.update({"features": (4,), "pools": ("avg",), "dense": (16,)})
  config.task.adversarial_training.steps = 2
  config.task.attacks.update({"epsilons": (0.1, 0.3), "steps": 2, "step_size": 0.1,
                              "max_examples": 40})
  record = train.train_and_evaluate(config, str(tmp_path))
  names = {"fgsm_eps0.1", "fgsm_eps0.3", "pgd_eps0.1", "pgd_eps0.3"}
  assert names <= set(record["final"])
  assert (tmp_path / "robustness.png").stat().st_size > 1000
  saved = json.loads((tmp_path / "robustness.json").read_text())
  assert saved["examples"] == 40 and set(saved["attacks"]) == names
  assert saved["attacks"]["pgd_eps0.3"]["accuracy"] == record["final"]["pgd_eps0.3"][
      "accuracy"]
  records = writers.read_metrics(str(tmp_path))
  assert [r["step"] for r in records if r["split"] == "pgd_eps0.3"] == [3]   # at the end
  assert "Robust accuracy, test split, 40 examples" in capsys.readouterr().out
