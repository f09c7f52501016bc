"""Generative models of images: a variational autoencoder (``vae``) and a DCGAN,
unconditional or class-conditional (``gan``).

VAE: the negative ELBO, -E_q[log p(x|z)] + KL(q(z|x) || N(0, I)), in nats per image, with
one reparameterised sample of z per image; the reconstruction and KL terms are reported
beside it. The likelihood p(x|z) is Bernoulli per pixel (``likelihood='bernoulli'``; with
``binarize=True`` the images are binarised, afresh at every step in training and once,
with a fixed seed, for evaluation, so the ELBO bounds a true log-likelihood of binary
images; without it the grey levels in [0, 1] are the Bernoulli targets, the usual
convention of VAE examples, which is a cross-entropy rather than a normalised
likelihood) or Gaussian with a fixed standard deviation (``likelihood='gaussian'``, a
density over pixels scaled to [0, 1], so its nats compare only with other Gaussian runs).

GAN: a generator and a discriminator, each with its own optimizer, in one state; the
non-saturating loss (Goodfellow et al., 2014); the discriminator steps first, then the
generator against the updated discriminator. Quality is measured in the penultimate-layer
features of an image classifier that practice_jax trained itself
(``config.task.feature_workdir``, e.g. a run of configs/mnist.py): the Fréchet distance
between Gaussians fitted to the features of generated and of real test images
(``classifier_frechet_distance``: the formula of FID, but not Inception features, so its
numbers are not FIDs), and for a conditional GAN the classifier's accuracy at
recognising the class each image was generated for (``generated_accuracy``; per class in
generated_quality.json). Without a classifier those metrics are skipped.

Both write PNG grids at every evaluation (images_during_training/step_<N>_<kind>.png) and
of the evaluated checkpoint at the end (<kind>.png), from fixed noise and fixed
validation images, so the grids compare across steps and runs.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from practice_jax import optim
from practice_jax.data import catalogue
from practice_jax.models import generative
from practice_jax.models.settings import one_of
from practice_jax.reporting import grids
from practice_jax.state import INIT_STREAM, STEP_STREAM, TrainState, stream_key
from practice_jax.tasks.base import (FRACTION, HIGHER, LOWER, Evaluator, Task, mean_metrics,
                                     split_evaluator)

Metrics = dict[str, jax.Array]
IMAGES_DIR = "images_during_training"
LIKELIHOODS = ("bernoulli", "gaussian")
# Fixed random streams for evaluation (beyond state.py's data, init and step streams), so
# evaluations differ only by the parameters.
EVAL_NOISE, GRID_NOISE, EVAL_BINARIZATION = 1001, 1002, 1003


def fixed_key(seed: int, purpose: int) -> jax.Array:
  return jax.random.fold_in(jax.random.PRNGKey(seed), purpose)


def _check_image_size(config: ml_collections.ConfigDict) -> str | None:
  """Convolutional parts halve the image per stage: its size must divide evenly."""
  stages = generative.conv_stages(config.model)
  spec = catalogue.CATALOGUE.get(config.data.name)
  if stages and spec is not None and spec.image_shape is not None:
    h, w = spec.image_shape[:2]
    if h % 2 ** stages or w % 2 ** stages:
      return (f"config.model has {stages} convolutional stages, each halving the image, "
              f"but {config.data.name}'s {h}x{w} images do not divide by {2 ** stages}; "
              f"use fewer stages.")
  return None


# -- VAE ---------------------------------------------------------------------------------

def kl_to_standard_normal(mean: jax.Array, log_var: jax.Array) -> jax.Array:
  """KL(N(mean, diag(exp(log_var))) || N(0, I)) per example, summed over the last axis."""
  return 0.5 * jnp.sum(jnp.square(mean) + jnp.exp(log_var) - 1.0 - log_var, axis=-1)


def reconstruction_nll(logits: jax.Array, x: jax.Array, likelihood: str,
                       gaussian_std: float = 0.1) -> jax.Array:
  """-log p(x|z) per example (nats) from the decoder's per-pixel outputs; x in [0, 1]."""
  axes = tuple(range(1, x.ndim))
  if likelihood == "bernoulli":
    return jnp.sum(optax.sigmoid_binary_cross_entropy(logits, x), axis=axes)
  mean = jax.nn.sigmoid(logits)
  nll = (0.5 * jnp.square((x - mean) / gaussian_std) + math.log(gaussian_std)
         + 0.5 * math.log(2 * math.pi))
  return jnp.sum(nll, axis=axes)


class VAETask(Task):
  DATA_KINDS = ("image",)
  METRICS = {"loss": LOWER, "elbo": HIGHER, "reconstruction": LOWER, "kl": LOWER}
  MONITOR = "validation/elbo"
  OUTPUTS = (IMAGES_DIR, "reconstructions.png", "samples.png", "interpolation.png")

  @staticmethod
  def config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "vae"
    c.likelihood = "bernoulli"         # bernoulli | gaussian (see the module docstring)
    c.gaussian_std = 0.1               # gaussian: the fixed standard deviation per pixel
    c.binarize = False                 # bernoulli: binary images (see the docstring)
    # Training objective reconstruction + kl_weight * KL (a beta-VAE for != 1); the
    # reported loss and ELBO always weigh the KL by 1.
    c.kl_weight = 1.0
    c.grid_size = 8                    # samples.png: grid_size x grid_size samples
    c.interpolation_steps = 8          # latents between two images in interpolation.png
    return c

  @staticmethod
  def check(config: ml_collections.ConfigDict) -> str | None:
    t = config.task
    problem = one_of(LIKELIHOODS)(t.likelihood)
    if problem:
      return f"config.task.likelihood={t.likelihood!r} {problem}"
    if t.gaussian_std <= 0:
      return f"config.task.gaussian_std={t.gaussian_std} must be positive."
    if t.binarize and t.likelihood != "bernoulli":
      return "config.task.binarize=True needs config.task.likelihood='bernoulli'."
    if t.kl_weight < 0:
      return f"config.task.kl_weight={t.kl_weight} must be >= 0."
    if t.grid_size < 1 or t.interpolation_steps < 1:
      return "config.task.grid_size and interpolation_steps must be at least 1."
    return (generative.check(config.model, "vae") or _check_image_size(config)
            or Task.check(config))

  def __init__(self, config: ml_collections.ConfigDict, source, parallel):
    super().__init__(config, source, parallel)
    self.image_shape = tuple(source.info["image_shape"])
    self.model = generative.vae(config.model, self.image_shape)
    self.unroll_on_cpu = generative.uses_convolutions(config.model)
    self._splits = {name: self._fixed_binarization(split, i)
                    for i, (name, split) in enumerate(source.eval_splits.items())}
    self._compiled: dict[str, Any] = {}

  def title(self) -> str:
    m = self.config.model
    return f"VAE ({m.architecture}, latent {m.latent_dim}) on {self.config.data.name}"

  def _fixed_binarization(self, split: dict[str, np.ndarray], index: int):
    """Evaluation images binarised once, with a fixed seed (binarize=True), else as they are."""
    if not self.config.task.binarize:
      return split
    rng = np.random.default_rng([self.config.seed, EVAL_BINARIZATION, index])
    binary = rng.random(split["image"].shape) < split["image"] / 255.0
    return {**split, "image": binary.astype(np.uint8) * 255}

  def init_state(self, plan: optim.Plan) -> TrainState:
    self.tx, schedule = optim.build(self.config.optimizer, self.config.schedule, plan)
    self.schedules = {"learning_rate": schedule}
    init_key, noise_key = jax.random.split(stream_key(self.config.seed, INIT_STREAM))
    sample = jnp.zeros((1,) + self.image_shape, jnp.float32)
    params = jax.jit(lambda k: self.model.init({"params": k}, sample, noise_key))(init_key)
    params = params["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=self.tx.init(params), model_state={},
                      key=stream_key(self.config.seed, STEP_STREAM))

  # -- steps ------------------------------------------------------------------------

  def _terms(self, params, x: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(-log p(x|z), KL(q(z|x) || p(z))) per example, for one z ~ q(z|x)."""
    logits, mean, log_var = self.model.apply({"params": params}, x, key)
    t = self.config.task
    return (reconstruction_nll(logits, x, t.likelihood, t.gaussian_std),
            kl_to_standard_normal(mean, log_var))

  @staticmethod
  def _sums(reconstruction, kl, mask) -> Metrics:
    return {"loss_sum": jnp.sum((reconstruction + kl) * mask),
            "reconstruction_sum": jnp.sum(reconstruction * mask),
            "kl_sum": jnp.sum(kl * mask), "count": jnp.sum(mask)}

  def train_step(self, state: TrainState, batch) -> tuple[TrainState, Metrics]:
    binarize_key, z_key = jax.random.split(state.step_key())
    x = batch["image"].astype(jnp.float32) / 255.0
    if self.config.task.binarize:
      x = jax.random.bernoulli(binarize_key, x).astype(jnp.float32)

    def loss_fn(params):
      reconstruction, kl = self._terms(params, x, z_key)
      return jnp.mean(reconstruction + self.config.task.kl_weight * kl), (reconstruction, kl)

    grads, (reconstruction, kl) = jax.grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1, opt_state=opt_state,
                              params=optax.apply_updates(state.params, updates))
    return new_state, self._sums(reconstruction, kl, jnp.ones_like(kl))

  def eval_step(self, state: TrainState, batch) -> Metrics:
    x = batch["image"].astype(jnp.float32) / 255.0
    reconstruction, kl = self._terms(state.params, x, fixed_key(self.config.seed, EVAL_NOISE))
    return self._sums(reconstruction, kl, batch["mask"])

  @staticmethod
  def summarize(sums: dict) -> dict[str, float]:
    m = mean_metrics(sums)
    return {"loss": m["loss"], "elbo": -m["loss"], "reconstruction": m["reconstruction"],
            "kl": m["kl"]}

  def evaluators(self) -> dict[str, Evaluator]:
    """Per split (on the fixed binarisation when binarize=True); test once, at the end."""
    return {name: split_evaluator(self.parallel, self.eval_step, self.summarize, split,
                                  self.config.eval_batch_size, periodic=name != "test")
            for name, split in self._splits.items()}

  # -- pictures ---------------------------------------------------------------------

  def _pictures(self, params, images, z):
    """Decoder means (in [0, 1]) of: the images' posterior means (reconstructions), the
    fixed latents z (samples), and latents on lines between pairs of images."""
    x = images.astype(jnp.float32) / 255.0
    mean = self.model.apply({"params": params}, x, method=generative.VAE.encode)[0]
    decode = lambda latents: jax.nn.sigmoid(
        self.model.apply({"params": params}, latents, method=generative.VAE.decode))
    rows = self.config.task.grid_size
    a, b = mean[:rows], mean[rows:2 * rows]
    t = jnp.linspace(0.0, 1.0, self.config.task.interpolation_steps + 2)[1:-1]
    line = (1 - t)[None, :, None] * a[:, None] + t[None, :, None] * b[:, None]
    between = decode(line.reshape(-1, a.shape[-1])).reshape(
        (rows, len(t)) + self.image_shape)
    return decode(mean), decode(z), between

  def artifacts(self, state: TrainState, step: int, out, final: bool) -> str:
    n = self.config.task.grid_size
    display = self._splits.get("validation", self._splits.get("test"))
    if display is None or len(display["image"]) < 2 * n:
      return ""
    images = display["image"][:2 * n]
    if "pictures" not in self._compiled:
      self._compiled["pictures"] = jax.jit(self._pictures)
    z = jax.random.normal(fixed_key(self.config.seed, GRID_NOISE),
                          (n * n, self.config.model.latent_dim))
    recon, samples, between = (np.asarray(a) for a in jax.device_get(
        self._compiled["pictures"](state.params, images, z)))
    x = images.astype(np.float32) / 255.0
    prefix = "" if final else f"{IMAGES_DIR}/step_{step:08d}_"
    title = f"{self.title()}, step {step}"
    out.figure(prefix + "reconstructions.png", lambda path: grids.image_grid(
        np.concatenate([x[:n], recon[:n], x[n:], recon[n:]]), path, columns=n,
        title=title + ": images and their reconstructions",
        row_labels=["image", "reconstruction"] * 2))
    out.figure(prefix + "samples.png", lambda path: grids.image_grid(
        samples, path, columns=n, title=title + ": samples, z ~ N(0, I) (fixed)"))
    ends = np.concatenate([x[:n, None], between, x[n:2 * n, None]], axis=1)
    steps = self.config.task.interpolation_steps
    out.figure(prefix + "interpolation.png", lambda path: grids.image_grid(
        ends.reshape((-1,) + self.image_shape), path, columns=steps + 2,
        title=title + ": between two images' latent means",
        column_labels=["from"] + [f"{(i + 1) / (steps + 1):.2f}" for i in range(steps)]
        + ["to"]))
    return ""


# -- GAN ---------------------------------------------------------------------------------

@flax.struct.dataclass
class GANState:
  step: jax.Array
  g_params: Any
  d_params: Any
  g_batch_stats: Any          # the generator's batch-norm statistics ({} without)
  g_opt: Any
  d_opt: Any
  key: jax.Array

  def step_key(self) -> jax.Array:
    return jax.random.fold_in(self.key, self.step)


def gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(mean, covariance) of [n, d] features, in float64."""
  f = np.asarray(features, np.float64)
  return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
  """The Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) as FID defines it
  (the squared 2-Wasserstein distance):
  |mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)), the trace of the root
  taken as that of the symmetric (s1^(1/2) sigma2 s1^(1/2))^(1/2), by eigenvalues."""
  w, v = np.linalg.eigh(sigma1)
  root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
  cross = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
  trace_root = np.sum(np.sqrt(np.clip(cross, 0.0, None)))
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2)
               - 2.0 * trace_root)


def penultimate_features(apply_classifier, *args) -> tuple[jax.Array, jax.Array]:
  """(input of the classifier's last Dense layer, logits): the features a Fréchet
  distance compares, from any registered classifier (they all end in nn.Dense)."""
  inputs = []

  def grab(next_fun, args_, kwargs, context):
    if isinstance(context.module, flax.linen.Dense) and context.method_name == "__call__":
      inputs.append(args_[0])
    return next_fun(*args_, **kwargs)

  with flax.linen.intercept_methods(grab):
    logits = apply_classifier(*args)
  if not inputs:
    raise ValueError("the feature classifier has no Dense layer to take features from")
  return inputs[-1].reshape((inputs[-1].shape[0], -1)), logits


class GANTask(Task):
  DATA_KINDS = ("image",)
  METRICS = {"d_loss": LOWER, "g_loss": LOWER, "classifier_frechet_distance": LOWER,
             "generated_accuracy": FRACTION}
  MONITOR = "generated/classifier_frechet_distance"
  OUTPUTS = (IMAGES_DIR, "samples.png", "generated_quality.json")

  @staticmethod
  def config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "gan"
    c.conditional = False              # class-conditional generator and discriminator
    # The workdir of a practice_jax classifier run on the same dataset, whose penultimate
    # features measure the generated images ('' = skip those metrics).
    c.feature_workdir = ""
    c.num_eval_samples = 5000          # generated images per evaluation
    c.grid_columns = 8                 # samples.png: 8x8, or one row per class
    return c

  @staticmethod
  def check(config: ml_collections.ConfigDict) -> str | None:
    t = config.task
    if t.num_eval_samples < 2 or t.grid_columns < 1:
      return ("config.task.num_eval_samples must be at least 2 and grid_columns at "
              "least 1.")
    if not t.feature_workdir and (config.early_stopping.patience or
                                  config.evaluate_checkpoint == "best"):
      return ("Early stopping and evaluate_checkpoint='best' follow the GAN's Fréchet "
              "distance, which needs a classifier: set config.task.feature_workdir.")
    return (_check_feature_workdir(config) or generative.check(config.model, "dcgan")
            or _check_image_size(config) or Task.check(config))

  def __init__(self, config: ml_collections.ConfigDict, source, parallel):
    super().__init__(config, source, parallel)
    info = source.info
    self.image_shape = tuple(info["image_shape"])
    self.class_names = list(info["class_names"])
    self.num_classes = len(self.class_names) if config.task.conditional else 0
    self.generator, self.discriminator = generative.dcgan(config.model, self.image_shape,
                                                          self.num_classes)
    self.latent = config.model.latent_dim
    self.unroll_on_cpu = True
    self._compiled: dict[str, Any] = {}
    self.quality: dict[str, Any] = {}       # the latest evaluation's details

  def title(self) -> str:
    kind = "conditional DCGAN" if self.num_classes else "DCGAN"
    return f"{kind} on {self.config.data.name}"

  def num_parameters(self, state: GANState) -> int:
    return sum(int(np.prod(np.shape(p)))
               for p in jax.tree.leaves((state.g_params, state.d_params)))

  def _labels(self, n: int) -> jax.Array | None:
    """Requested classes for n generated images: 0, 1, ..., 0, 1, ... (None: unconditional)."""
    return jnp.arange(n) % self.num_classes if self.num_classes else None

  def init_state(self, plan: optim.Plan) -> GANState:
    self.g_tx, g_schedule = optim.build(self.config.optimizer, self.config.schedule, plan)
    self.d_tx, d_schedule = optim.build(self.config.optimizer, self.config.schedule, plan)
    self.schedules = {"g_learning_rate": g_schedule, "d_learning_rate": d_schedule}
    g_key, d_key = jax.random.split(stream_key(self.config.seed, INIT_STREAM))
    labels = jnp.zeros((2,), jnp.int32) if self.num_classes else None
    g_vars = jax.jit(lambda k: self.generator.init(
        k, jnp.zeros((2, self.latent)), labels))(g_key)
    d_vars = jax.jit(lambda k: self.discriminator.init(
        k, jnp.zeros((2,) + self.image_shape), labels))(d_key)
    g, d = g_vars["params"], d_vars["params"]
    return GANState(jnp.zeros((), jnp.int32), g, d, g_vars.get("batch_stats", {}),
                    self.g_tx.init(g), self.d_tx.init(d),
                    stream_key(self.config.seed, STEP_STREAM))

  def generate(self, g_params, g_batch_stats, z, labels, train: bool = False):
    """Images in [-1, 1]; in training also the updated batch-norm statistics."""
    variables = {"params": g_params}
    if g_batch_stats:
      variables["batch_stats"] = g_batch_stats
      if train:
        images, updates = self.generator.apply(variables, z, labels, train=True,
                                               mutable=["batch_stats"])
        return images, updates["batch_stats"]
    return self.generator.apply(variables, z, labels, train=train), g_batch_stats

  def train_step(self, state: GANState, batch) -> tuple[GANState, Metrics]:
    real = batch["image"].astype(jnp.float32) / 127.5 - 1.0
    labels = batch["label"] if self.num_classes else None
    z = jax.random.normal(state.step_key(), (real.shape[0], self.latent))
    bce = optax.sigmoid_binary_cross_entropy
    # One forward pass of the generator serves both steps: its vjp carries the
    # discriminator's gradient (after the discriminator's update) back to the generator.
    fake, g_vjp, g_batch_stats = jax.vjp(
        lambda g: self.generate(g, state.g_batch_stats, z, labels, train=True),
        state.g_params, has_aux=True)

    def d_loss_fn(d_params):
      real_logits = self.discriminator.apply({"params": d_params}, real, labels)
      fake_logits = self.discriminator.apply({"params": d_params},
                                             jax.lax.stop_gradient(fake), labels)
      return bce(real_logits, 1.0).mean() + bce(fake_logits, 0.0).mean()

    d_loss, d_grads = jax.value_and_grad(d_loss_fn)(state.d_params)
    d_updates, d_opt = self.d_tx.update(d_grads, state.d_opt, state.d_params)
    d_params = optax.apply_updates(state.d_params, d_updates)

    def g_loss_fn(images):    # non-saturating: -log D(G(z))
      return bce(self.discriminator.apply({"params": d_params}, images, labels), 1.0).mean()

    g_loss, fake_grads = jax.value_and_grad(g_loss_fn)(fake)
    g_grads = g_vjp(fake_grads)[0]
    g_updates, g_opt = self.g_tx.update(g_grads, state.g_opt, state.g_params)
    new_state = state.replace(step=state.step + 1, d_params=d_params, d_opt=d_opt,
                              g_params=optax.apply_updates(state.g_params, g_updates),
                              g_opt=g_opt, g_batch_stats=g_batch_stats)
    return new_state, {"d_loss_sum": d_loss, "g_loss_sum": g_loss, "count": jnp.float32(1.0)}

  @staticmethod
  def summarize(sums: dict) -> dict[str, float]:
    return mean_metrics(sums)

  # -- quality in a classifier's features -----------------------------------------------

  def evaluators(self) -> dict[str, Evaluator]:
    workdir = self.config.task.feature_workdir
    if not workdir:
      if self.parallel.is_main:
        print("No config.task.feature_workdir: the GAN's Fréchet distance and class "
              "accuracy are skipped (give the workdir of a classifier trained on "
              f"{self.config.data.name}, e.g. a run of configs/mnist.py).")
      return {}
    from practice_jax import train   # the loop's loader of a finished run
    exp, clf_state, clf_step, which = train.load_trained(workdir)
    clf = exp.task
    features = jax.jit(lambda s, images: penultimate_features(clf.logits, s, images))
    batch = self.config.eval_batch_size

    def real_stats(split):
      f = np.concatenate([np.asarray(features(clf_state, split["image"][i:i + batch])[0])
                          for i in range(0, len(split["image"]), batch)])
      return gaussian_statistics(f)

    splits = self.source.eval_splits
    reference_name = "test" if "test" in splits else "validation"
    real = real_stats(splits[reference_name])
    details = {"feature_classifier": {"workdir": os.path.abspath(workdir),
                                      "checkpoint": which, "step": clf_step,
                                      "model": exp.config.model.name,
                                      "feature_dim": int(real[0].shape[0])},
               "real_images": f"{self.config.data.name} {reference_name} split",
               "num_generated": self.config.task.num_eval_samples}
    if reference_name == "test" and "validation" in splits:
      # The floor a perfect generator would reach with as many images as validation holds.
      details["real_validation_vs_test"] = frechet_distance(
          *real_stats(splits["validation"]), *real)

    def generated(state, clf_state, z, labels):
      images, _ = self.generate(state.g_params, state.g_batch_stats, z, labels)
      return penultimate_features(clf.logits, clf_state, (images + 1.0) * 127.5)

    generated = jax.jit(generated)
    n = self.config.task.num_eval_samples
    z = jax.random.normal(fixed_key(self.config.seed, EVAL_NOISE), (n, self.latent))
    labels = self._labels(n)

    def run(state) -> dict[str, float]:
      feats, correct = [], []
      for i in range(0, n, batch):
        wanted = None if labels is None else labels[i:i + batch]
        f, logits = generated(state, clf_state, z[i:i + batch], wanted)
        feats.append(np.asarray(f))
        if wanted is not None:
          correct.append(np.asarray(jnp.argmax(logits, -1) == wanted))
      metrics = {"classifier_frechet_distance": frechet_distance(
          *gaussian_statistics(np.concatenate(feats)), *real)}
      self.quality = {**details, **metrics}
      if correct:
        hits, wanted = np.concatenate(correct), np.asarray(labels)
        metrics["generated_accuracy"] = float(hits.mean())
        self.quality["generated_accuracy"] = metrics["generated_accuracy"]
        self.quality["generated_accuracy_per_class"] = {
            name: float(hits[wanted == k].mean()) for k, name in enumerate(self.class_names)}
      return metrics

    return {"generated": Evaluator(run)}

  # -- pictures ---------------------------------------------------------------------

  def artifacts(self, state: GANState, step: int, out, final: bool) -> str:
    columns = self.config.task.grid_columns
    key = fixed_key(self.config.seed, GRID_NOISE)
    if self.num_classes:   # one row per class; each column one fixed z for every class
      z = jnp.tile(jax.random.normal(key, (columns, self.latent)), (self.num_classes, 1))
      labels = jnp.repeat(jnp.arange(self.num_classes), columns)
      row_labels = self.class_names
    else:
      z, labels, row_labels = jax.random.normal(key, (columns * columns, self.latent)), None, None
    if "grid" not in self._compiled:
      self._compiled["grid"] = jax.jit(
          lambda s, z, y: self.generate(s.g_params, s.g_batch_stats, z, y)[0])
    images = (np.asarray(jax.device_get(self._compiled["grid"](state, z, labels))) + 1) / 2
    prefix = "" if final else f"{IMAGES_DIR}/step_{step:08d}_"
    said = ""
    if "classifier_frechet_distance" in self.quality:
      said = f", classifier FD {self.quality['classifier_frechet_distance']:.2f}"
    out.figure(prefix + "samples.png", lambda path: grids.image_grid(
        images, path, columns=columns, row_labels=row_labels,
        title=f"{self.title()}, step {step}{said} (fixed noise)"))
    if not self.quality:
      return ""
    out.json("generated_quality.json", {"step": step, **self.quality})
    if not final:
      return ""
    text = (f"Generated images: classifier Fréchet distance "
            f"{self.quality['classifier_frechet_distance']:.2f} (real validation vs test "
            f"images: {self.quality.get('real_validation_vs_test', float('nan')):.2f})")
    per_class = self.quality.get("generated_accuracy_per_class")
    if per_class:
      text += ("; the classifier recognises the requested class in "
               + ", ".join(f"{k} {v:.1%}" for k, v in per_class.items()))
    return text


def _check_feature_workdir(config: ml_collections.ConfigDict) -> str | None:
  """The feature classifier must be a finished-enough classification run on this data."""
  workdir = config.task.feature_workdir
  if not workdir:
    return None
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    return (f"config.task.feature_workdir={workdir!r} holds no practice_jax run (no "
            f"config.json); train a classifier there first, e.g. python -m "
            f"practice_jax.main --config=configs/mnist.py --workdir={workdir}.")
  with open(path, encoding="utf-8") as f:
    stored = json.load(f)
  task = stored.get("task", {})
  task = task.get("name") if isinstance(task, dict) else task
  if task != "classification":
    return (f"config.task.feature_workdir={workdir!r} is a {task!r} run; the features "
            f"come from a classification run.")
  if stored.get("data", {}).get("name") != config.data.name:
    return (f"config.task.feature_workdir={workdir!r} classifies "
            f"{stored.get('data', {}).get('name')!r}, not {config.data.name!r}; its "
            f"features would not describe these images.")
  return None
