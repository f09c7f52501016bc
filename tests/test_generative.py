"""Generative tasks: the VAE's ELBO terms, the GAN's two optimizers, the Fréchet distance,
and tiny VAE and conditional-GAN runs through the unchanged loop (PNG grids, a feature
classifier, exact resume)."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg

from conftest import array_task, checkpointed_state, image_info, killed_copy, load_config, tiny
from practice_jax import train
from practice_jax.errors import UserError
from practice_jax.optim import Plan
from practice_jax.reporting import writers
from practice_jax.tasks import generative
from practice_jax.validation import validate

GRIDS = ("reconstructions.png", "samples.png", "interpolation.png")


def _images(n, seed=0):
  rng = np.random.default_rng(seed)
  return {"image": rng.integers(0, 256, (n, 8, 8, 1)).astype(np.uint8),
          "label": (np.arange(n) % 3).astype(np.int32)}


def _tiny_vae_config():
  config = tiny(load_config("mnist_vae"), epochs=1.0)   # mock data: 6 steps per epoch
  config.model.hidden, config.model.latent_dim = (16,), 3
  config.task.grid_size, config.task.interpolation_steps = 4, 2
  config.checkpoint_every_steps = 2
  config.keep_checkpoints = 10
  return config


def _tiny_gan_config(name="mnist_cgan"):
  config = tiny(load_config(name), epochs=1.0)
  config.model.latent_dim = 4
  config.model.generator_features, config.model.discriminator_features = (4, 4), (4, 8)
  config.task.num_eval_samples, config.task.grid_columns = 20, 3
  return config


def test_the_kl_term_is_the_closed_form_kl_of_diagonal_gaussians_to_a_standard_normal():
  rng = np.random.default_rng(0)
  mean, log_var = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
  # KL(N(m, S) || N(0, I)) = (tr S + m'm - k - log det S) / 2, with full matrices.
  expected = [0.5 * (np.trace(np.diag(np.exp(v))) + m @ m - len(m)
                     - np.linalg.slogdet(np.diag(np.exp(v)))[1]) for m, v in zip(mean, log_var)]
  chex.assert_trees_all_close(generative.kl_to_standard_normal(jnp.asarray(mean),
                                                               jnp.asarray(log_var)),
                              jnp.asarray(expected, jnp.float32), rtol=1e-5)
  chex.assert_trees_all_close(generative.kl_to_standard_normal(jnp.zeros(3), jnp.zeros(3)),
                              jnp.float32(0.0))

  # ...and it is the KL the task reports, next to -log p(x|z), both adding up to -ELBO.
  config = _tiny_vae_config()
  task = array_task(config, _images(16), {"validation": _images(8, 1)}, image_info(3, (8, 8, 1)))
  state = task.init_state(Plan(10, 2))
  batch = {"image": jnp.asarray(_images(8, 1)["image"]), "mask": jnp.ones(8)}
  x = batch["image"] / 255.0
  m, v = task.model.apply({"params": state.params}, x, method=task.model.encode)
  sums = task.eval_step(state, batch)
  chex.assert_trees_all_close(sums["kl_sum"], generative.kl_to_standard_normal(m, v).sum(),
                              rtol=1e-5)
  metrics = task.summarize(sums)
  assert metrics["elbo"] == pytest.approx(-(metrics["reconstruction"] + metrics["kl"]), rel=1e-5)


def test_the_bernoulli_and_gaussian_reconstruction_terms_are_log_likelihoods():
  logits = jnp.asarray([[0.3, -1.2]])
  x = jnp.asarray([[1.0, 0.0]])
  p = jax.nn.sigmoid(logits)
  chex.assert_trees_all_close(generative.reconstruction_nll(logits, x, "bernoulli"),
                              -jnp.log(p[:, 0]) - jnp.log(1 - p[:, 1]), rtol=1e-5)
  expected = -jax.scipy.stats.norm.logpdf(x, p, 0.2).sum(-1)
  chex.assert_trees_all_close(generative.reconstruction_nll(logits, x, "gaussian", 0.2),
                              expected, rtol=1e-5)


def test_the_frechet_distance_matches_the_matrix_square_root_formula():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(200, 6)), rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) + 1
  (m1, s1), (m2, s2) = generative.gaussian_statistics(a), generative.gaussian_statistics(b)
  expected = (np.sum((m1 - m2) ** 2) + np.trace(s1 + s2)
              - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real))
  assert generative.frechet_distance(m1, s1, m2, s2) == pytest.approx(expected, rel=1e-6)
  assert generative.frechet_distance(m1, s1, m1, s1) == pytest.approx(0.0, abs=1e-6)
  # One dimension: (m1 - m2)^2 + (s1 - s2)^2 for standard deviations s.
  assert generative.frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([0.0]),
                                     np.array([[1.0]])) == pytest.approx(2.0)


def test_each_gan_optimizer_updates_its_own_network_by_its_own_loss():
  config = _tiny_gan_config()
  task = array_task(config, _images(16), {}, image_info(3, (8, 8, 1)))
  state = task.init_state(Plan(10, 2))
  batch = {k: jnp.asarray(v[:8]) for k, v in _images(16).items()}
  bce = optax.sigmoid_binary_cross_entropy
  real = batch["image"] / 127.5 - 1.0
  z = jax.random.normal(state.step_key(), (8, task.latent))

  def fake(g):
    return task.generate(g, state.g_batch_stats, z, batch["label"], train=True)[0]

  def d_loss(d):
    logits = lambda x: task.discriminator.apply({"params": d}, x, batch["label"])
    return (bce(logits(real), 1.0).mean() +
            bce(logits(jax.lax.stop_gradient(fake(state.g_params))), 0.0).mean())

  def g_loss(g, d):
    return bce(task.discriminator.apply({"params": d}, fake(g), batch["label"]), 1.0).mean()

  # With plain SGD at rate 1, each network moves by exactly minus the gradient of its own
  # loss (so by nothing of the other's); the generator's against the discriminator after
  # the discriminator's step.
  task.g_tx = task.d_tx = optax.sgd(1.0)
  new, metrics = jax.jit(task.train_step)(state.replace(
      g_opt=task.g_tx.init(state.g_params), d_opt=task.d_tx.init(state.d_params)), batch)
  minus = lambda params, grads: jax.tree.map(lambda p, g: p - g, params, grads)
  d_grads = jax.jit(jax.grad(d_loss))(state.d_params)
  chex.assert_trees_all_close(new.d_params, minus(state.d_params, d_grads), rtol=1e-4, atol=1e-6)
  g_grads = jax.jit(jax.grad(g_loss))(state.g_params, new.d_params)
  chex.assert_trees_all_close(new.g_params, minus(state.g_params, g_grads), rtol=1e-4, atol=1e-6)
  assert metrics["d_loss_sum"] == pytest.approx(float(jax.jit(d_loss)(state.d_params)), rel=1e-5)


def test_a_tiny_vae_writes_its_grids_and_resumes_exactly(mock_tfds, tmp_path):
  config = _tiny_vae_config()
  full = train.train_and_evaluate(config, str(tmp_path / "full"))
  out = tmp_path / "full"
  for name in GRIDS:
    assert (out / name).is_file(), name
    for step in (0, 6):
      assert (out / generative.IMAGES_DIR / f"step_{step:08d}_{name}").is_file()
  test = full["final"]["test"]
  assert test["kl"] >= 0 and test["elbo"] == pytest.approx(-test["loss"])
  assert full["monitored_metric"] == "validation/elbo"
  validation = [r["elbo"] for r in writers.read_metrics(str(out)) if r["split"] == "validation"]
  assert validation[-1] > validation[0]         # it learned something
  killed_copy(out, tmp_path / "resumed", after_step=2)
  resumed = train.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert resumed["final"] == full["final"]
  chex.assert_trees_all_equal(checkpointed_state(config, out).params,
                              checkpointed_state(config, tmp_path / "resumed").params)


def test_without_a_feature_classifier_the_gan_says_once_that_it_skips_its_metrics(capsys):
  config = _tiny_gan_config()
  task = array_task(config, _images(16), {}, image_info(3, (8, 8, 1)))
  assert task.evaluators() == {}
  assert capsys.readouterr().out.count("No config.task.feature_workdir") == 1


def test_a_tiny_conditional_gan_writes_its_grids_and_is_measured_by_a_classifier(
    mock_tfds, tmp_path):
  classifier = tiny(load_config("mnist"), epochs=2 / 6)
  classifier.model.features, classifier.model.pools, classifier.model.dense = (4,), ("avg",), (8,)
  classifier.plots = False
  train.train_and_evaluate(classifier, str(tmp_path / "classifier"))

  config = _tiny_gan_config()
  config.task.feature_workdir = str(tmp_path / "classifier")
  full = train.train_and_evaluate(config, str(tmp_path / "full"))
  out = tmp_path / "full"
  generated = full["final"]["generated"]
  assert generated["classifier_frechet_distance"] > 0
  assert 0.0 <= generated["generated_accuracy"] <= 1.0
  quality = json.loads((out / "generated_quality.json").read_text())
  assert len(quality["generated_accuracy_per_class"]) == 10
  assert quality["classifier_frechet_distance"] == generated["classifier_frechet_distance"]
  assert quality["feature_classifier"]["feature_dim"] == 8     # the classifier's dense(8)
  assert (out / "samples.png").is_file()
  assert (out / generative.IMAGES_DIR / "step_00000006_samples.png").is_file()
  records = writers.read_metrics(str(out))
  assert [r["step"] for r in records if r["split"] == "generated"] == [0, 6]


@pytest.mark.parametrize("name,setting,value,message", [
    ("mnist_vae", "task.likelihood", "poisson", "likelihood='poisson' must be one of"),
    ("mnist_vae", "model.hiden", (8,), "did you mean 'hidden'"),
    ("fashion_mnist_vae", "model.hidden", (8, 8, 8), "do not divide by 8"),
    ("mnist_dcgan", "task.feature_workdir", "/nonexistent", "holds no practice_jax run"),
    ("mnist_dcgan", "early_stopping.patience", 2, "needs a classifier"),
])
def test_a_bad_generative_config_is_one_sentence(name, setting, value, message):
  config = load_config(name)
  section, key = setting.split(".")
  with config.unlocked():
    config[section][key] = value
  with pytest.raises(UserError, match=message):
    validate(config, 1)
