"""Image classification: softmax cross-entropy, accuracy, on an in-memory TFDS dataset."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from practice_jax import models
from practice_jax.data import augment, in_memory
from practice_jax.reporting import classification as report_lib
from practice_jax.reporting import plots
from practice_jax.parallel import is_main_process
from practice_jax.state import INIT_STREAM, STEP_STREAM, TrainState, stream_key
from practice_jax.tasks.common import all_reduce, pmap_axis

Metrics = dict[str, jax.Array]


class ClassificationTask:

  def __init__(self, config: ml_collections.ConfigDict,
               data: in_memory.ClassificationData | None = None,
               metadata: dict | None = None):
    """Loads the dataset, or with `metadata` (from a checkpoint) builds a data-free task
    for inference."""
    self.config = config
    if data is None:
      data = (in_memory.ClassificationData.from_metadata(metadata) if metadata else
              in_memory.load_classification(config.data))
    self.data = data
    model_kwargs = {k: v for k, v in config.model.items() if k != "name"}
    self.model = models.build(config.model.name, self.data.num_classes,
                              axis_name=pmap_axis(config), **model_kwargs)
    self.label_smoothing = config.label_smoothing
    self.mean = jnp.asarray(self.data.mean)
    self.std = jnp.asarray(self.data.std)
    self.train_data = self.data.train
    self.num_train_examples = len(self.data.train["label"])
    self.eval_splits = {"validation": self.data.validation, "test": self.data.test}
    self.eval_splits = {name: in_memory.pad_for_eval(split, config.eval_batch_size)
                        for name, split in self.eval_splits.items()
                        if split is not None and len(split["label"])}

  def metadata(self) -> dict:
    return self.data.metadata()

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

  def init_state(self, tx: optax.GradientTransformation) -> TrainState:
    key = stream_key(self.config.seed, INIT_STREAM)
    sample = jnp.zeros((1,) + self.data.image_shape, jnp.float32)
    variables = jax.jit(lambda k: self.model.init({"params": k}, sample, train=False))(key)
    variables = dict(variables)
    params = variables.pop("params")
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params), model_state=variables,
                      key=stream_key(self.config.seed, STEP_STREAM))

  # -- steps ------------------------------------------------------------------------

  def train_batch(self, data: dict[str, jax.Array], perm: jax.Array, index: jax.Array,
                  batch_size: int) -> dict[str, jax.Array]:
    idx = jax.lax.dynamic_slice_in_dim(perm, index * batch_size, batch_size)
    return {k: jnp.take(v, idx, axis=0) for k, v in data.items()}

  def _sums(self, logits, labels, losses, mask) -> Metrics:
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return {"loss_sum": jnp.sum(losses * mask), "correct": jnp.sum(correct * mask),
            "count": jnp.sum(mask)}

  def train_step(self, state: TrainState, batch: dict[str, jax.Array],
                 tx: optax.GradientTransformation, axis_name: str | None = None
                 ) -> tuple[TrainState, Metrics]:
    """One optimizer step. Under pmap (`axis_name` given) the gradients are averaged and
    the metric sums added over the devices."""
    aug_key, dropout_key = jax.random.split(state.step_key())
    aug = self.config.augment
    images = self.preprocess(augment.augment(aug_key, batch["image"], aug.crop_padding,
                                             aug.horizontal_flip, axis_name))
    labels = batch["label"]
    targets = optax.smooth_labels(jax.nn.one_hot(labels, self.data.num_classes),
                                  self.label_smoothing)

    def loss_fn(params):
      logits, model_state = self._apply(params, state.model_state, images, train=True,
                                        key=dropout_key)
      return optax.softmax_cross_entropy(logits, targets).mean(), (logits, model_state)

    grads, (logits, model_state) = jax.grad(loss_fn, has_aux=True)(state.params)
    grads = all_reduce(jax.lax.pmean, grads, axis_name)
    # Reported: plain cross-entropy, comparable with validation even under smoothing.
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1,
                              params=optax.apply_updates(state.params, updates),
                              opt_state=opt_state, model_state=model_state)
    return new_state, all_reduce(jax.lax.psum, self._sums(
        logits, labels, losses, jnp.ones_like(losses)), axis_name)

  def eval_step(self, state: TrainState, batch: dict[str, jax.Array]) -> Metrics:
    logits = self.logits(state, batch["image"])
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    return self._sums(logits, batch["label"], losses, batch["mask"])

  def logits(self, state: TrainState, images: jax.Array) -> jax.Array:
    return self._apply(state.params, state.model_state, self.preprocess(images),
                       train=False)[0]

  @staticmethod
  def output_files() -> list[str]:
    """Files this task writes in the workdir (deleted by --config_change=restart)."""
    return [f"{split}_{name}" for split in ("test", "validation")
            for name in ("report.txt", "report.json", "confusion_matrix.png")]

  def on_evaluation(self, state: TrainState, workdir: str, step: int) -> None:
    """Nothing beyond the metrics: the test split is kept for the final report."""

  def write_report(self, state: TrainState, parallel, workdir: str, split: str = "test"
                   ) -> dict[str, Any]:
    """Classification report and confusion matrix of `split`, as text, JSON and PNG."""
    padded = parallel.replicate(self.eval_splits[split])
    predict = parallel.compile_predict(self.logits, self.config.eval_batch_size)
    logits = np.asarray(jax.device_get(predict(state, padded)))
    n = int(self.eval_splits[split]["mask"].sum())
    labels = self.eval_splits[split]["label"][:n]
    cm = report_lib.confusion_matrix(labels, logits[:n].argmax(-1), self.data.num_classes)
    report = report_lib.classification_report(cm, self.data.class_names)
    if not is_main_process():
      return {"report": report, "text": ""}
    text = (f"{split} split, {n} examples\n\n" + report_lib.format_report(report) + "\n\n"
            + report_lib.format_confusion_matrix(cm, self.data.class_names) + "\n")
    with open(os.path.join(workdir, f"{split}_report.txt"), "w", encoding="utf-8") as f:
      f.write(text)
    with open(os.path.join(workdir, f"{split}_report.json"), "w", encoding="utf-8") as f:
      json.dump({**report, "confusion_matrix": cm.tolist()}, f, indent=2)
    if self.config.plots:
      plots.confusion_matrix(cm, self.data.class_names,
                             os.path.join(workdir, f"{split}_confusion_matrix.png"),
                             title=f"{self.config.model.name} on {self.config.data.name} "
                                   f"({split}): accuracy {report['accuracy']:.2%}")
    return {"report": report, "text": text}

  @staticmethod
  def summarize(sums: dict[str, Any]) -> dict[str, float]:
    count = max(float(np.asarray(sums["count"])), 1.0)
    return {"loss": float(np.asarray(sums["loss_sum"])) / count,
            "accuracy": float(np.asarray(sums["correct"])) / count}
