"""Denoising autoencoder on images: reconstruct the clean image from a corrupted one.

Corruption, in pixel space [0, 1]: optionally a fraction ``mask_ratio`` of the
``patch_size`` x ``patch_size`` patches set to 0 (masked-autoencoder style), then
Gaussian noise of standard deviation ``noise_std``, clipped back to [0, 1]. The model
(``conv_autoencoder``, models/autoencoder.py) sees the corrupted image standardised with
the training set's channel statistics, exactly as the classification task feeds a
classifier, and outputs pixels (a linear output layer); the loss is their mean squared
error to the clean image (per pixel). ``input_mse`` is the corrupted input's own error,
the baseline the reconstruction should beat. Training corrupts afresh every step; evaluation with
one fixed corruption per image (keys from the seed and the image's index).

The encoder's parameters have the ``cnn`` classifier's paths (``Conv_0``, ``Conv_1``,
...), so ``config.init_from`` (include '^Conv_') starts a classifier from it.

PNG grids of corrupted / reconstructed / clean validation images at every evaluation
(images_during_training/step_<N>_denoising.png) and of the evaluated checkpoint at the
end (denoising.png).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from practice_jax import models, optim
from practice_jax.data import catalogue
from practice_jax.models.autoencoder import ConvAutoencoder
from practice_jax.models.layers import for_batch
from practice_jax.reporting import grids
from practice_jax.state import INIT_STREAM, STEP_STREAM, TrainState, stream_key
from practice_jax.tasks.base import LOWER, Evaluator, Task, mean_metrics, split_evaluator
from practice_jax.tasks.masked_lm import with_index

Metrics = dict[str, jax.Array]
IMAGES_DIR = "images_during_training"
EVAL_CORRUPTION_STREAM = 1001
MODELS = {"conv_autoencoder": ConvAutoencoder}


def corrupt(key: jax.Array, pixels: jax.Array, noise_std: float, mask_ratio: float,
            patch_size: int, draw=lambda sample, key, shape: sample(key, shape)
            ) -> jax.Array:
  """[batch, h, w, c] pixels in [0, 1] -> corrupted pixels in [0, 1]: a fraction
  `mask_ratio` of the patches (a grid of `patch_size` squares; partial ones at the
  right and bottom edges) zeroed, then Gaussian noise of std `noise_std`, clipped."""
  mask_key, noise_key = jax.random.split(key)
  b, h, w, _ = pixels.shape
  x = pixels
  if mask_ratio > 0:
    grid = (b, -(-h // patch_size), -(-w // patch_size))
    masked = draw(lambda k, s: jax.random.bernoulli(k, mask_ratio, s), mask_key, grid)
    masked = jnp.repeat(jnp.repeat(masked, patch_size, 1), patch_size, 2)[:, :h, :w]
    x = jnp.where(masked[..., None], 0.0, x)
  if noise_std > 0:
    noise = draw(lambda k, s: jax.random.normal(k, s), noise_key, pixels.shape)
    x = jnp.clip(x + noise_std * noise, 0.0, 1.0)
  return x


class DenoisingAutoencoderTask(Task):
  DATA_KINDS = ("image",)
  METRICS = {"loss": LOWER, "input_mse": LOWER}
  MONITOR = "validation/loss"
  OUTPUTS = (IMAGES_DIR, "denoising.png")

  @staticmethod
  def config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "autoencoder"
    c.noise_std = 0.5          # Gaussian noise, pixel units (images in [0, 1]); 0 = none
    c.mask_ratio = 0.0         # fraction of patches zeroed; 0 = none
    c.patch_size = 4           # side of the masked patches, pixels
    c.grid_size = 8            # images per row of denoising.png
    return c

  @staticmethod
  def check(config: ml_collections.ConfigDict) -> str | None:
    t = config.task
    if t.noise_std < 0 or not 0.0 <= t.mask_ratio < 1.0:
      return (f"config.task.noise_std={t.noise_std} must be >= 0 and mask_ratio="
              f"{t.mask_ratio} in [0, 1).")
    if t.noise_std == 0 and t.mask_ratio == 0:
      return ("config.task.noise_std and mask_ratio are both 0: nothing corrupts the input, "
              "so the autoencoder would only learn to copy it; set either.")
    if t.patch_size < 1 or t.grid_size < 1:
      return "config.task.patch_size and grid_size must be at least 1."
    if config.model.name not in MODELS:
      return (f"The autoencoder task's model (config.model.name) is one of "
              f"{', '.join(MODELS)}, not {config.model.name!r}.")
    problem = models.check(config.model)
    if problem:
      return problem
    spec = catalogue.CATALOGUE.get(config.data.name)
    halvings = sum(p != "none" for p in config.model.pools)
    if spec is not None and spec.image_shape is not None:
      h, w = spec.image_shape[:2]
      if h % 2 ** halvings or w % 2 ** halvings:
        return (f"config.model.pools halve the image {halvings} times, but "
                f"{config.data.name}'s {h}x{w} images do not divide by {2 ** halvings}; "
                f"use fewer pooled stages.")
    return Task.check(config)

  def __init__(self, config: ml_collections.ConfigDict, source, parallel):
    super().__init__(config, source, parallel)
    info = source.info
    self.image_shape = tuple(info["image_shape"])
    model_kwargs = {k: v for k, v in config.model.items() if k != "name"}
    self.model = models.construct(MODELS[config.model.name], **model_kwargs)
    self.unroll_on_cpu = models.unrolled_on_cpu(config.model.name)
    self.mean = jnp.asarray(info["mean"], jnp.float32)
    self.std = jnp.asarray(info["std"], jnp.float32)
    self._compiled = {}

  def title(self) -> str:
    t = self.config.task
    how = " and ".join(
        ([f"noise {t.noise_std:g}"] if t.noise_std else [])
        + ([f"{t.mask_ratio:.0%} of {t.patch_size}x{t.patch_size} patches masked"]
           if t.mask_ratio else []))
    return f"denoising {self.config.model.name} ({how}) on {self.config.data.name}"

  def init_state(self, plan: optim.Plan) -> TrainState:
    self.tx, schedule = optim.build(self.config.optimizer, self.config.schedule, plan)
    self.schedules = {"learning_rate": schedule}
    key = stream_key(self.config.seed, INIT_STREAM)
    sample = jnp.zeros((1,) + self.image_shape, jnp.float32)
    variables = dict(jax.jit(lambda k: self.model.init({"params": k}, sample,
                                                       train=False))(key))
    params = variables.pop("params")
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=self.tx.init(params), model_state=variables,
                      key=stream_key(self.config.seed, STEP_STREAM))

  # -- steps ------------------------------------------------------------------------

  def _corrupt(self, key, pixels, draw=for_batch):
    t = self.config.task
    return corrupt(key, pixels, t.noise_std, t.mask_ratio, t.patch_size, draw)

  def fixed_corruption(self, index: jax.Array, pixels: jax.Array) -> jax.Array:
    """The evaluation corruption of the images with indices `index`: a function of
    (seed, index) only."""
    base = stream_key(self.config.seed, EVAL_CORRUPTION_STREAM)
    return jax.vmap(lambda i, x: self._corrupt(
        jax.random.fold_in(base, i), x[None], lambda s, k, shape: s(k, shape))[0])(
            index, pixels)

  def reconstruct(self, params, model_state, corrupted, *, train: bool = False):
    """Corrupted pixels -> (reconstructed pixels, updated model state)."""
    x = (corrupted - self.mean) / self.std
    variables = {"params": params, **model_state}
    if train and model_state:
      return self.model.apply(variables, x, train=True, mutable=list(model_state))
    return self.model.apply(variables, x, train=train), model_state

  @staticmethod
  def _sums(reconstructed, corrupted, clean, weights) -> Metrics:
    axes = tuple(range(1, clean.ndim))
    mse = jnp.mean(jnp.square(reconstructed - clean), axis=axes)
    return {"loss_sum": jnp.sum(mse * weights),
            "input_mse_sum": jnp.sum(jnp.mean(jnp.square(corrupted - clean), axis=axes)
                                     * weights),
            "count": jnp.sum(weights)}

  def train_step(self, state: TrainState, batch) -> tuple[TrainState, Metrics]:
    clean = batch["image"].astype(jnp.float32) / 255.0
    corrupted = self._corrupt(state.step_key(), clean)

    def loss_fn(params):
      reconstructed, model_state = self.reconstruct(params, state.model_state, corrupted,
                                                    train=True)
      return jnp.mean(jnp.square(reconstructed - clean)), (reconstructed, model_state)

    grads, (reconstructed, model_state) = jax.grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    model_state = optim.keep_frozen(self.config.optimizer, state.model_state, model_state)
    new_state = state.replace(step=state.step + 1, opt_state=opt_state,
                              params=optax.apply_updates(state.params, updates),
                              model_state=model_state)
    return new_state, self._sums(reconstructed, corrupted, clean,
                                 jnp.ones(clean.shape[:1]))

  def eval_step(self, state: TrainState, batch) -> Metrics:
    clean = batch["image"].astype(jnp.float32) / 255.0
    corrupted = self.fixed_corruption(batch["index"], clean)
    reconstructed, _ = self.reconstruct(state.params, state.model_state, corrupted)
    return self._sums(reconstructed, corrupted, clean, batch["mask"])

  @staticmethod
  def summarize(sums: dict) -> dict[str, float]:
    m = mean_metrics(sums)
    return {"loss": m["loss"], "input_mse": m["input_mse"]}

  def evaluators(self) -> dict[str, Evaluator]:
    return {name: split_evaluator(self.parallel, self.eval_step, self.summarize,
                                  with_index(split), self.config.eval_batch_size,
                                  periodic=name != "test")
            for name, split in self.source.eval_splits.items()}

  # -- pictures ---------------------------------------------------------------------

  def _pictures(self, params, model_state, images):
    clean = images.astype(jnp.float32) / 255.0
    corrupted = self.fixed_corruption(jnp.arange(len(images)), clean)
    return corrupted, self.reconstruct(params, model_state, corrupted)[0], clean

  def artifacts(self, state: TrainState, step: int, out, final: bool) -> str:
    splits = self.source.eval_splits
    display = splits.get("validation", splits.get("test"))
    n = self.config.task.grid_size
    if display is None or len(display["image"]) == 0:
      return ""
    images = display["image"][:n]
    if "pictures" not in self._compiled:
      self._compiled["pictures"] = jax.jit(self._pictures)
    corrupted, reconstructed, clean = (np.asarray(a) for a in jax.device_get(
        self._compiled["pictures"](state.params, state.model_state, images)))
    prefix = "" if final else f"{IMAGES_DIR}/step_{step:08d}_"
    out.figure(prefix + "denoising.png", lambda path: grids.image_grid(
        np.concatenate([corrupted, reconstructed, clean]), path, columns=len(images),
        title=f"{self.title()}, step {step}",
        row_labels=["corrupted", "reconstructed", "clean"]))
    return ""
