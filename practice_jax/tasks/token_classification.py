"""Token classification: a tag for every character of a window (the seeds' "fine-tune
BERT for token classification", at character scale).

The tags come with the text (``config.data.labels``; data/text.py): with 'speaker', each
character of Tiny Shakespeare is 'speaker' if it belongs to a speaker-name line (a line
ending in ':' that starts the text or follows an empty line, like "First Citizen:") and
'dialogue' otherwise (newlines included). About 6.6% of the characters are 'speaker'.
About one line in six that ends in ':' is dialogue ("...and thus answer'd:"), so a
character's tag depends on its line's end (to the right) and on the line before it (to
the left): a bidirectional encoder sees both within its window.

The model is the masked character model's encoder (model 'bert', models/encoder.py) with
a per-character Dense head; with ``config.init_from`` pointing at a masked_lm run
(include '^encoder/') it starts from the pre-trained encoder. Reported: cross-entropy,
token accuracy and the macro-averaged F1 over the tags at every evaluation; at the end
the per-class classification report (precision, recall, F1, support) and confusion
matrix of every token of the test windows, as text, JSON and PNG.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from practice_jax import optim
from practice_jax.data import text
from practice_jax.reporting import classification as report_lib
from practice_jax.reporting import plots
from practice_jax.state import STEP_STREAM, TrainState, stream_key
from practice_jax.tasks.base import FRACTION, LOWER, Task, mean_metrics, pad_for_eval
from practice_jax.tasks.masked_lm import (build_encoder_model, check_encoder_model,
                                         init_params)

Metrics = dict[str, jax.Array]


class TokenClassificationTask(Task):
  DATA_KINDS = ("text",)
  METRICS = {"loss": LOWER, "accuracy": FRACTION, "macro_f1": FRACTION}
  MONITOR = "validation/macro_f1"
  OUTPUTS = tuple(f"{split}_{name}" for split in ("test", "validation")
                  for name in ("report.txt", "report.json", "confusion_matrix.png"))

  @staticmethod
  def config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "token_classification"
    return c

  @staticmethod
  def check(config: ml_collections.ConfigDict) -> str | None:
    if config.data.get("labels", "none") == "none":
      labelled = sorted(k for k in text.LABELS if k != "none")
      return (f"The token_classification task needs a tag for every character: set "
              f"config.data.labels to one of {', '.join(labelled)}.")
    return check_encoder_model(config, "token_classification") or Task.check(config)

  def __init__(self, config: ml_collections.ConfigDict, source, parallel):
    super().__init__(config, source, parallel)
    self.vocab = text.Vocabulary(source.info["vocab"])
    self.class_names = list(source.info["label_names"])
    self.num_classes = len(self.class_names)
    self.block_size = config.data.block_size
    self.model = build_encoder_model(config, self.num_classes, self.vocab.size)

  def metadata(self) -> dict:
    return {"vocab": self.vocab.chars, "label_names": self.class_names}

  def title(self) -> str:
    return (f"{self.config.model.name} tagging {self.config.data.labels} on "
            f"{self.config.data.name}")

  def init_state(self, plan: optim.Plan) -> TrainState:
    self.tx, schedule = optim.build(self.config.optimizer, self.config.schedule, plan)
    self.schedules = {"learning_rate": schedule}
    params = init_params(self.model, self.config.seed, self.block_size)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=self.tx.init(params), model_state={},
                      key=stream_key(self.config.seed, STEP_STREAM))

  def logits(self, state: TrainState, tokens: jax.Array, *, train: bool = False, key=None):
    """[batch, time] tokens (the first block_size of longer windows) -> [batch, time,
    classes] logits."""
    rngs = {"dropout": key} if key is not None else None
    return self.model.apply({"params": state.params}, tokens[:, :self.block_size],
                            train=train, rngs=rngs)

  def _sums(self, logits, labels, weights) -> Metrics:
    """Loss and accuracy sums over the tokens, and per class the true positives, the
    predicted and the actual counts (for F1), all weighted by the example's `weights`."""
    w = jnp.broadcast_to(weights[:, None], labels.shape)
    predicted = jnp.argmax(logits, -1)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    sums = {"loss_sum": jnp.sum(losses * w),
            "accuracy_sum": jnp.sum((predicted == labels) * w), "count": jnp.sum(w)}
    for c in range(self.num_classes):
      sums[f"tp_{c}"] = jnp.sum(((predicted == c) & (labels == c)) * w)
      sums[f"predicted_{c}"] = jnp.sum((predicted == c) * w)
      sums[f"actual_{c}"] = jnp.sum((labels == c) * w)
    return sums

  def train_step(self, state: TrainState, batch) -> tuple[TrainState, Metrics]:
    labels = batch["labels"][:, :self.block_size]

    def loss_fn(params):
      logits = self.logits(state.replace(params=params), batch["tokens"], train=True,
                           key=state.step_key())
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits

    grads, logits = jax.grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1, opt_state=opt_state,
                              params=optax.apply_updates(state.params, updates))
    return new_state, self._sums(logits, labels, jnp.ones(labels.shape[:1]))

  def eval_step(self, state: TrainState, batch) -> Metrics:
    labels = batch["labels"][:, :self.block_size]
    return self._sums(self.logits(state, batch["tokens"]), labels, batch["mask"])

  def summarize(self, sums: dict) -> dict[str, float]:
    metrics = mean_metrics(sums)
    f1 = []
    for c in range(self.num_classes):
      tp, predicted, actual = (float(np.asarray(sums[f"{k}_{c}"]))
                               for k in ("tp", "predicted", "actual"))
      f1.append(2 * tp / (predicted + actual) if predicted + actual else 0.0)
    return {"loss": metrics["loss"], "accuracy": metrics["accuracy"],
            "macro_f1": float(np.mean(f1))}

  # -- reports ----------------------------------------------------------------------

  def artifacts(self, state: TrainState, step: int, out, final: bool) -> str:
    if not final or "test" not in self.source.eval_splits:
      return ""
    return self.report(state, "test", out)["text"]

  def report(self, state: TrainState, split: str, out) -> dict:
    """The classification report and confusion matrix of every token of `split`'s
    windows, as text, JSON and PNG ({split}_report.txt, ...)."""
    data = self.source.eval_splits[split]
    batch_size = self.config.eval_batch_size
    padded = self.parallel.replicate(pad_for_eval(data, batch_size))
    predict = self.parallel.compile_predict(
        lambda state, tokens: jnp.argmax(self.logits(state, tokens), -1), batch_size,
        "tokens")
    n = len(data["tokens"])
    predicted = np.asarray(jax.device_get(predict(state, padded)))[:n]
    labels = data["labels"][:, :self.block_size]
    cm = report_lib.confusion_matrix(labels.ravel(), predicted.ravel(), self.num_classes)
    report = report_lib.classification_report(cm, self.class_names)
    text_out = (f"{split} split, {n} windows of {self.block_size} characters "
                f"({labels.size} tokens)\n\n" + report_lib.format_report(report) + "\n\n"
                + report_lib.format_confusion_matrix(cm, self.class_names) + "\n")
    out.text(f"{split}_report.txt", text_out)
    out.json(f"{split}_report.json", {**report, "confusion_matrix": cm.tolist()})
    out.figure(f"{split}_confusion_matrix.png", lambda path: plots.confusion_matrix(
        cm, self.class_names, path,
        title=f"{self.title()} ({split}): token accuracy {report['accuracy']:.2%}"))
    return {"report": report, "text": text_out}
