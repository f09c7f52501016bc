"""Tasks on tables (CSV files, data/tables.py): classification of rows, and regression.

- ``table_classification``: softmax cross-entropy over the classes; with two classes and
  ``binary_sigmoid`` (the default) the model has ONE output z and the loss is the sigmoid
  cross-entropy of z. Its logits are reported as [0, z], whose softmax is
  [1 - sigmoid(z), sigmoid(z)], so the classification report, confusion matrix and
  ``predict`` treat both cases alike.
- ``regression``: one output, mean squared error on the standardised target (the
  training split's mean and standard deviation); reported in the target's own units as
  MSE (``loss``), MAE and R^2 (1 - residual sum of squares / total sum of squares around
  the evaluated split's own mean), with a predicted-against-actual PNG of the test split.

The features arrive standardised and one-hot encoded by the source; models take a
vector (``mlp``; ``hidden=()`` is a linear model).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from practice_jax import models, optim
from practice_jax.reporting import plots
from practice_jax.state import INIT_STREAM, STEP_STREAM, TrainState, stream_key
from practice_jax.tasks.base import HIGHER, LOWER, Task, pad_for_eval
from practice_jax.tasks.classification import ClassificationTask

VECTOR_MODELS = ("mlp",)


def _check_model(config) -> str | None:
  if config.model.name not in VECTOR_MODELS:
    return (f"config.model.name={config.model.name!r} takes images; a table's rows are "
            f"vectors: use one of {', '.join(VECTOR_MODELS)} (hidden=() is a linear model).")
  return models.check(config.model)


def _init_params(model, seed: int, num_features: int):
  key = stream_key(seed, INIT_STREAM)
  sample = jnp.zeros((1, num_features), jnp.float32)
  variables = dict(jax.jit(lambda k: model.init({"params": k}, sample, train=False))(key))
  return variables.pop("params"), variables


class TableClassificationTask(ClassificationTask):
  """Rows to classes; everything but the inputs and the binary head is the image
  classifier's (its steps, report and confusion matrix)."""
  DATA_KINDS = ("table",)
  INPUT = "features"

  @staticmethod
  def config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "table_classification"
    c.label_smoothing = 0.0
    c.binary_sigmoid = True     # two classes: one output and sigmoid cross-entropy
    return c

  @staticmethod
  def check(config: ml_collections.ConfigDict) -> str | None:
    if config.data.get("target", "class") != "class":
      return ("table_classification needs class labels: set config.data.target='class' "
              "(or use config.task.name='regression' for a numeric label).")
    if not 0.0 <= config.task.label_smoothing < 1.0:
      return f"config.task.label_smoothing={config.task.label_smoothing} must be in [0, 1)."
    return _check_model(config) or Task.check(config)

  def __init__(self, config: ml_collections.ConfigDict, source, parallel):
    Task.__init__(self, config, source, parallel)
    info = source.info
    self.num_classes, self.class_names = info["num_classes"], list(info["class_names"])
    self.binary = self.num_classes == 2 and config.task.binary_sigmoid
    self.image_shape = (info["num_features"],)      # the input's shape, for init_state
    kwargs = {k: v for k, v in config.model.items() if k != "name"}
    self.model = models.build(config.model.name, 1 if self.binary else self.num_classes,
                              **kwargs)
    self.unroll_on_cpu = False

  def preprocess(self, features: jax.Array) -> jax.Array:
    return features.astype(jnp.float32)     # standardised by the source

  def _apply(self, params, model_state, inputs, *, train: bool, key=None):
    out, model_state = super()._apply(params, model_state, inputs, train=train, key=key)
    if self.binary:      # z -> [0, z]: softmax of it is [1 - sigmoid(z), sigmoid(z)]
      out = jnp.concatenate([jnp.zeros_like(out), out], axis=-1)
    return out, model_state

  def train_step(self, state: TrainState, batch) -> tuple[TrainState, dict]:
    features, labels = self.preprocess(batch["features"]), batch["label"]
    smoothing = self.config.task.label_smoothing

    def loss_fn(params):
      logits, model_state = self._apply(params, state.model_state, features, train=True,
                                        key=state.step_key())
      if self.binary:
        targets = labels.astype(jnp.float32) * (1 - smoothing) + smoothing / 2
        loss = optax.sigmoid_binary_cross_entropy(logits[:, 1], targets).mean()
      else:
        targets = optax.smooth_labels(jax.nn.one_hot(labels, self.num_classes), smoothing)
        loss = optax.softmax_cross_entropy(logits, targets).mean()
      return loss, (logits, model_state)

    grads, (logits, model_state) = jax.grad(loss_fn, has_aux=True)(state.params)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1,
                              params=optax.apply_updates(state.params, updates),
                              opt_state=opt_state, model_state=model_state)
    return new_state, self._sums(logits, labels, losses, jnp.ones_like(losses))

  def eval_step(self, state: TrainState, batch) -> dict:
    logits = self.logits(state, batch["features"])
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    return self._sums(logits, batch["label"], losses, batch["mask"])

  def title(self) -> str:
    return f"{self.config.model.name} on {self.config.data.path or self.config.data.name}"


class RegressionTask(Task):
  DATA_KINDS = ("table",)
  METRICS = {"loss": LOWER, "mae": LOWER, "r2": HIGHER}
  MONITOR = "validation/loss"
  OUTPUTS = ("test_predictions.png", "test_regression.json")

  @staticmethod
  def config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"name": "regression"})

  @staticmethod
  def check(config: ml_collections.ConfigDict) -> str | None:
    if config.data.get("target") != "number":
      return ("regression needs a numeric label: set config.data.target='number' (and "
              "config.data.label_column).")
    return _check_model(config) or Task.check(config)

  def __init__(self, config: ml_collections.ConfigDict, source, parallel):
    super().__init__(config, source, parallel)
    info = source.info
    kwargs = {k: v for k, v in config.model.items() if k != "name"}
    self.model = models.build(config.model.name, 1, **kwargs)
    self.num_features = info["num_features"]
    self.label_mean, self.label_std = info["label_mean"], info["label_std"]

  def init_state(self, plan: optim.Plan) -> TrainState:
    self.tx, schedule = optim.build(self.config.optimizer, self.config.schedule, plan)
    self.schedules = {"learning_rate": schedule}
    params, model_state = _init_params(self.model, self.config.seed, self.num_features)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=self.tx.init(params), model_state=model_state,
                      key=stream_key(self.config.seed, STEP_STREAM))

  def _standardised(self, params, features, train: bool, key=None) -> jax.Array:
    rngs = {"dropout": key} if key is not None else None
    out = self.model.apply({"params": params}, features.astype(jnp.float32), train=train,
                           rngs=rngs)
    return out[:, 0]

  def predictions(self, state: TrainState, features: jax.Array) -> jax.Array:
    """The target in its own units."""
    z = self._standardised(state.params, features, train=False)
    return z * self.label_std + self.label_mean

  def _sums(self, predictions, labels, mask) -> dict:
    error = predictions - labels
    return {"se_sum": jnp.sum(error * error * mask), "ae_sum": jnp.sum(jnp.abs(error) * mask),
            "y_sum": jnp.sum(labels * mask), "y2_sum": jnp.sum(labels * labels * mask),
            "count": jnp.sum(mask)}

  def train_step(self, state: TrainState, batch) -> tuple[TrainState, dict]:
    labels = batch["label"]
    target = (labels - self.label_mean) / self.label_std

    def loss_fn(params):
      z = self._standardised(params, batch["features"], train=True, key=state.step_key())
      return jnp.mean((z - target) ** 2), z

    grads, z = jax.grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1,
                              params=optax.apply_updates(state.params, updates),
                              opt_state=opt_state)
    predictions = z * self.label_std + self.label_mean
    return new_state, self._sums(predictions, labels, jnp.ones_like(labels))

  def eval_step(self, state: TrainState, batch) -> dict:
    return self._sums(self.predictions(state, batch["features"]), batch["label"],
                      batch["mask"])

  @staticmethod
  def summarize(sums: dict) -> dict[str, float]:
    s = {k: float(np.asarray(v)) for k, v in sums.items()}
    n = max(s["count"], 1.0)
    total = s["y2_sum"] - s["y_sum"] ** 2 / n        # squares around the split's mean
    return {"loss": s["se_sum"] / n, "mae": s["ae_sum"] / n,
            "r2": 1.0 - s["se_sum"] / total if total > 0 else 0.0}

  def title(self) -> str:
    return f"{self.config.model.name} on {self.config.data.path or self.config.data.name}"

  def artifacts(self, state: TrainState, step: int, out, final: bool) -> str:
    if not final or "test" not in self.source.eval_splits:
      return ""
    data = self.source.eval_splits["test"]
    batch_size = self.config.eval_batch_size
    padded = self.parallel.replicate(pad_for_eval(data, batch_size))
    predict = self.parallel.compile_predict(self.predictions, batch_size, "features")
    n = len(data["label"])
    predicted = np.asarray(jax.device_get(predict(state, padded)))[:n].reshape(-1)
    actual = np.asarray(data["label"], np.float64)
    metrics = self.summarize(jax.device_get(self._sums(predicted, actual, np.ones(n))))
    out.json("test_regression.json", {**metrics, "examples": n})
    out.figure("test_predictions.png", lambda path: plots.predicted_vs_actual(
        actual, predicted, path,
        title=f"{self.title()} (test): R² {metrics['r2']:.3f}, MAE {metrics['mae']:.4g}"))
    return (f"test split, {n} rows: MSE {metrics['loss']:.4g}, MAE {metrics['mae']:.4g}, "
            f"R² {metrics['r2']:.4f}")
