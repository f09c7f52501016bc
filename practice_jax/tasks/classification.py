"""Image classification: softmax cross-entropy and accuracy, with on-device augmentation,
label smoothing, a classification report and a confusion matrix."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from practice_jax import models, optim
from practice_jax.data import augment
from practice_jax.reporting import classification as report_lib
from practice_jax.reporting import plots
from practice_jax.state import INIT_STREAM, STEP_STREAM, TrainState, stream_key
from practice_jax.tasks.base import FRACTION, LOWER, Task, mean_metrics, pad_for_eval

Metrics = dict[str, jax.Array]


class ClassificationTask(Task):
  DATA_KINDS = ("image",)
  METRICS = {"loss": LOWER, "accuracy": FRACTION}
  MONITOR = "validation/accuracy"
  INPUT = "image"                   # the batch field the model reads
  OUTPUTS = tuple(f"{split}_{name}" for split in ("test", "validation")
                  for name in ("report.txt", "report.json", "confusion_matrix.png"))

  @staticmethod
  def config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "classification"
    c.label_smoothing = 0.0
    # Training-time augmentation, on the device, from the step's key (never at evaluation).
    c.augment = ml_collections.ConfigDict()
    c.augment.crop_padding = 0             # random crop after zero-padding by this many pixels
    c.augment.horizontal_flip = False      # random left-right mirror
    return c

  @staticmethod
  def check(config: ml_collections.ConfigDict) -> str | None:
    t = config.task
    if not 0.0 <= t.label_smoothing < 1.0:
      return f"config.task.label_smoothing={t.label_smoothing} must be in [0, 1)."
    if t.augment.crop_padding < 0:
      return f"config.task.augment.crop_padding={t.augment.crop_padding} must be >= 0."
    return models.check(config.model) or Task.check(config)

  def __init__(self, config: ml_collections.ConfigDict, source, parallel):
    super().__init__(config, source, parallel)
    info = source.info
    self.num_classes, self.class_names = info["num_classes"], list(info["class_names"])
    self.image_shape = tuple(info["image_shape"])
    model_kwargs = {k: v for k, v in config.model.items() if k != "name"}
    self.model = models.build(config.model.name, self.num_classes, **model_kwargs)
    self.unroll_on_cpu = models.unrolled_on_cpu(config.model.name)
    self.mean = jnp.asarray(info["mean"], jnp.float32)
    self.std = jnp.asarray(info["std"], jnp.float32)

  # -- model ------------------------------------------------------------------------

  def preprocess(self, images: jax.Array) -> jax.Array:
    """uint8 images -> float32, standardised with the training set's channel stats."""
    return (images.astype(jnp.float32) / 255.0 - self.mean) / self.std

  def _apply(self, params, model_state, images, *, train: bool, key=None):
    variables = {"params": params, **model_state}
    rngs = {"dropout": key} if key is not None else None
    if train and model_state:
      return self.model.apply(variables, images, train=True, rngs=rngs,
                              mutable=list(model_state))
    return self.model.apply(variables, images, train=train, rngs=rngs), model_state

  def init_state(self, plan: optim.Plan) -> TrainState:
    self.tx, schedule = optim.build(self.config.optimizer, self.config.schedule, plan)
    self.schedules = {"learning_rate": schedule}
    key = stream_key(self.config.seed, INIT_STREAM)
    sample = jnp.zeros((1,) + self.image_shape, jnp.float32)
    variables = jax.jit(lambda k: self.model.init({"params": k}, sample, train=False))(key)
    variables = dict(variables)
    params = variables.pop("params")
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=self.tx.init(params), model_state=variables,
                      key=stream_key(self.config.seed, STEP_STREAM))

  # -- steps ------------------------------------------------------------------------

  def _sums(self, logits, labels, losses, mask) -> Metrics:
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return {"loss_sum": jnp.sum(losses * mask), "accuracy_sum": jnp.sum(correct * mask),
            "count": jnp.sum(mask)}

  def train_step(self, state: TrainState, batch: dict[str, jax.Array]
                 ) -> tuple[TrainState, Metrics]:
    aug_key, dropout_key = jax.random.split(state.step_key())
    aug = self.config.task.augment
    images = self.preprocess(augment.augment(aug_key, batch["image"], aug.crop_padding,
                                             aug.horizontal_flip))
    labels = batch["label"]
    targets = optax.smooth_labels(jax.nn.one_hot(labels, self.num_classes),
                                  self.config.task.label_smoothing)

    def loss_fn(params):
      logits, model_state = self._apply(params, state.model_state, images, train=True,
                                        key=dropout_key)
      return optax.softmax_cross_entropy(logits, targets).mean(), (logits, model_state)

    grads, (logits, model_state) = jax.grad(loss_fn, has_aux=True)(state.params)
    # Reported: plain cross-entropy, comparable with validation even under smoothing.
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    model_state = optim.keep_frozen(self.config.optimizer, state.model_state, model_state)
    new_state = state.replace(step=state.step + 1,
                              params=optax.apply_updates(state.params, updates),
                              opt_state=opt_state, model_state=model_state)
    return new_state, self._sums(logits, labels, losses, jnp.ones_like(losses))

  def eval_step(self, state: TrainState, batch: dict[str, jax.Array]) -> Metrics:
    logits = self.logits(state, batch["image"])
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    return self._sums(logits, batch["label"], losses, batch["mask"])

  def logits(self, state: TrainState, images: jax.Array) -> jax.Array:
    return self._apply(state.params, state.model_state, self.preprocess(images),
                       train=False)[0]

  @staticmethod
  def summarize(sums: dict) -> dict[str, float]:
    metrics = mean_metrics(sums)
    return {"loss": metrics["loss"], "accuracy": metrics["accuracy"]}


  # -- reports ----------------------------------------------------------------------

  def artifacts(self, state: TrainState, step: int, out, final: bool) -> str:
    if not final or "test" not in self.source.eval_splits:
      return ""
    return self.report(state, "test", out)["text"]

  def report(self, state: TrainState, split: str, out) -> dict:
    """Classification report and confusion matrix of `split`, as text, JSON and PNG."""
    data = self.source.eval_splits[split]
    batch_size = self.config.eval_batch_size
    padded = self.parallel.replicate(pad_for_eval(data, batch_size))
    predict = self.parallel.compile_predict(self.logits, batch_size, self.INPUT)
    n = len(data["label"])
    logits = np.asarray(jax.device_get(predict(state, padded)))[:n]
    cm = report_lib.confusion_matrix(data["label"], logits.argmax(-1), self.num_classes)
    report = report_lib.classification_report(cm, self.class_names)
    text = (f"{split} split, {n} examples\n\n" + report_lib.format_report(report) + "\n\n"
            + report_lib.format_confusion_matrix(cm, self.class_names) + "\n")
    out.text(f"{split}_report.txt", text)
    out.json(f"{split}_report.json", {**report, "confusion_matrix": cm.tolist()})
    out.figure(f"{split}_confusion_matrix.png", lambda path: plots.confusion_matrix(
        cm, self.class_names, path,
        title=f"{self.title()} ({split}): accuracy {report['accuracy']:.2%}"))
    return {"report": report, "text": text}
