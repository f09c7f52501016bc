"""Masked character modelling (BERT's pre-training objective) with a bidirectional
Transformer encoder (models/encoder.py, model 'bert').

Of each window's characters, every one is chosen with probability ``mask_rate`` (15%);
a chosen character is replaced by the [MASK] token (id = the vocabulary size, an
embedding row outside the vocabulary) with probability ``mask_fraction`` (80%), by a
uniformly random character with probability ``random_fraction`` (10%), and kept as it is
otherwise (10%), as in Devlin et al. (2019). The loss is the cross-entropy of the chosen
positions only (averaged over them); the reported accuracy is the fraction of chosen
characters predicted exactly (``masked_accuracy``). Training draws the choice afresh
every step (from the step's key); evaluation uses one fixed choice per window (keys from
the seed and the window's index), so evaluations differ only by the parameters.

The trained encoder (``encoder/...`` parameters) transfers to token classification
(tasks/token_classification.py) through ``config.init_from``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from practice_jax import models, optim
from practice_jax.data import text
from practice_jax.models.layers import for_batch
from practice_jax.state import INIT_STREAM, STEP_STREAM, TrainState, stream_key
from practice_jax.tasks.base import (FRACTION, LOWER, Evaluator, Task, mean_metrics,
                                     split_evaluator)

Metrics = dict[str, jax.Array]
EVAL_MASK_STREAM = 1001      # the fixed masking of evaluation windows
ENCODER_MODELS = ("bert",)   # bidirectional encoders with a per-token head


def bert_mask(key: jax.Array, tokens: jax.Array, vocab_size: int, mask_id: int,
              rate: float = 0.15, mask_fraction: float = 0.8, random_fraction: float = 0.1,
              draw=lambda sample, key, shape: sample(key, shape)
              ) -> tuple[jax.Array, jax.Array]:
  """(corrupted tokens, chosen) for integer `tokens` of any shape: each position chosen
  with probability `rate`; a chosen one becomes `mask_id` with probability
  `mask_fraction`, a uniformly random token in [0, vocab_size) with `random_fraction`,
  and stays otherwise. `draw(sample, key, shape)` makes the random draws (layers.for_batch
  in a train step, so every parallel mode draws the same numbers)."""
  k_choose, k_how, k_token = jax.random.split(key, 3)
  shape = tokens.shape
  chosen = draw(lambda k, s: jax.random.bernoulli(k, rate, s), k_choose, shape)
  how = draw(lambda k, s: jax.random.uniform(k, s), k_how, shape)
  random_tokens = draw(lambda k, s: jax.random.randint(k, s, 0, vocab_size, tokens.dtype),
                       k_token, shape)
  corrupted = jnp.where(how < mask_fraction, jnp.asarray(mask_id, tokens.dtype),
                        jnp.where(how < mask_fraction + random_fraction, random_tokens,
                                  tokens))
  return jnp.where(chosen, corrupted, tokens), chosen


def check_encoder_model(config: ml_collections.ConfigDict, task: str) -> str | None:
  if config.model.name not in ENCODER_MODELS:
    return (f"The {task} task needs a bidirectional encoder with a per-token head: "
            f"config.model.name={config.model.name!r} must be one of "
            f"{', '.join(ENCODER_MODELS)}.")
  return models.check(config.model)


def build_encoder_model(config: ml_collections.ConfigDict, num_classes: int,
                        vocab_size: int):
  model_kwargs = {k: v for k, v in config.model.items() if k != "name"}
  return models.build(config.model.name, num_classes, block_size=config.data.block_size,
                      vocab_size=vocab_size, **model_kwargs)


def init_params(model, seed: int, block_size: int):
  key = stream_key(seed, INIT_STREAM)
  sample = jnp.zeros((1, block_size), jnp.int32)
  return jax.jit(lambda k: model.init({"params": k}, sample, train=False))(key)["params"]


def with_index(split: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The split with each example's index ('index'), for per-example fixed keys."""
  n = len(next(iter(split.values())))
  return {**split, "index": np.arange(n, dtype=np.int32)}


class MaskedLMTask(Task):
  DATA_KINDS = ("text",)
  METRICS = {"loss": LOWER, "masked_accuracy": FRACTION}
  MONITOR = "validation/loss"
  OUTPUTS = ("masked_predictions.txt",)

  @staticmethod
  def config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "masked_lm"
    c.mask_rate = 0.15          # chance that a character is chosen for prediction
    c.mask_fraction = 0.8       # of the chosen: replaced by [MASK]
    c.random_fraction = 0.1     # of the chosen: replaced by a random character (rest kept)
    c.num_examples = 4          # validation windows shown in masked_predictions.txt
    return c

  @staticmethod
  def check(config: ml_collections.ConfigDict) -> str | None:
    t = config.task
    if not 0.0 < t.mask_rate <= 1.0:
      return f"config.task.mask_rate={t.mask_rate} must be in (0, 1]."
    if (min(t.mask_fraction, t.random_fraction) < 0
        or t.mask_fraction + t.random_fraction > 1.0):
      return (f"config.task.mask_fraction={t.mask_fraction} and random_fraction="
              f"{t.random_fraction} must be >= 0 and add up to at most 1 (the rest of the "
              f"chosen characters stay as they are).")
    if t.num_examples < 0:
      return f"config.task.num_examples={t.num_examples} must be >= 0."
    return check_encoder_model(config, "masked_lm") or Task.check(config)

  def __init__(self, config: ml_collections.ConfigDict, source, parallel):
    super().__init__(config, source, parallel)
    self.vocab = text.Vocabulary(source.info["vocab"])
    self.mask_id = self.vocab.size             # the extra embedding row
    self.block_size = config.data.block_size
    self.model = build_encoder_model(config, self.vocab.size, self.vocab.size)

  def metadata(self) -> dict:
    return {"vocab": self.vocab.chars, "mask_token": self.mask_id}

  def title(self) -> str:
    return f"masked {self.config.model.name} on {self.config.data.name}"

  def init_state(self, plan: optim.Plan) -> TrainState:
    self.tx, schedule = optim.build(self.config.optimizer, self.config.schedule, plan)
    self.schedules = {"learning_rate": schedule}
    params = init_params(self.model, self.config.seed, self.block_size)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=self.tx.init(params), model_state={},
                      key=stream_key(self.config.seed, STEP_STREAM))

  def logits(self, params, tokens: jax.Array, *, train: bool = False, key=None):
    rngs = {"dropout": key} if key is not None else None
    return self.model.apply({"params": params}, tokens, train=train, rngs=rngs)

  def mask(self, key: jax.Array, tokens: jax.Array, draw=for_batch):
    t = self.config.task
    return bert_mask(key, tokens, self.vocab.size, self.mask_id, t.mask_rate,
                     t.mask_fraction, t.random_fraction, draw)

  def fixed_mask(self, index: jax.Array, tokens: jax.Array):
    """The evaluation masking of windows with indices `index`: a function of (seed,
    index) only."""
    base = stream_key(self.config.seed, EVAL_MASK_STREAM)
    return jax.vmap(lambda i, w: self.mask(jax.random.fold_in(base, i), w,
                                           lambda s, k, shape: s(k, shape)))(index, tokens)

  @staticmethod
  def sums(logits, targets, chosen, weights=None) -> Metrics:
    """Cross-entropy and accuracy summed over the chosen positions (times `weights` per
    example), and their count."""
    w = chosen.astype(jnp.float32)
    if weights is not None:
      w = w * weights[:, None]
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    return {"loss_sum": jnp.sum(losses * w), "masked_accuracy_sum": jnp.sum(correct * w),
            "count": jnp.sum(w)}

  def train_step(self, state: TrainState, batch) -> tuple[TrainState, Metrics]:
    mask_key, dropout_key = jax.random.split(state.step_key())
    tokens = batch["tokens"][:, :self.block_size]
    inputs, chosen = self.mask(mask_key, tokens)

    def loss_fn(params):
      logits = self.logits(params, inputs, train=True, key=dropout_key)
      sums = self.sums(logits, tokens, chosen)
      return sums["loss_sum"] / jnp.maximum(sums["count"], 1.0), sums

    grads, sums = jax.grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1, opt_state=opt_state,
                              params=optax.apply_updates(state.params, updates))
    return new_state, sums

  def eval_step(self, state: TrainState, batch) -> Metrics:
    tokens = batch["tokens"][:, :self.block_size]
    inputs, chosen = self.fixed_mask(batch["index"], tokens)
    return self.sums(self.logits(state.params, inputs), tokens, chosen, batch["mask"])

  @staticmethod
  def summarize(sums: dict) -> dict[str, float]:
    metrics = mean_metrics(sums)
    return {"loss": metrics["loss"], "masked_accuracy": metrics["masked_accuracy"]}

  def evaluators(self) -> dict[str, Evaluator]:
    return {name: split_evaluator(self.parallel, self.eval_step, self.summarize,
                                  with_index(split), self.config.eval_batch_size,
                                  periodic=name != "test")
            for name, split in self.source.eval_splits.items()}

  def artifacts(self, state: TrainState, step: int, out, final: bool) -> str:
    """At the end: a few validation windows, masked (each [MASK] shown as '_'), with the
    model's guesses at the chosen positions, in masked_predictions.txt."""
    split = self.source.eval_splits.get("validation")
    n = self.config.task.num_examples
    if not final or split is None or n == 0:
      return ""
    tokens = jnp.asarray(split["tokens"][:n, :self.block_size])
    inputs, chosen = self.fixed_mask(jnp.arange(len(tokens)), tokens)
    guesses = jnp.argmax(self.logits(state.params, inputs), -1)
    inputs, chosen, guesses = (np.asarray(a) for a in (inputs, chosen, guesses))
    show = lambda ids: "".join("_" if i == self.mask_id else self.vocab.chars[i]
                               for i in ids)
    blocks = []
    for i in range(len(tokens)):
      filled = np.where(chosen[i], guesses[i], np.asarray(tokens[i]))
      right = int(np.sum((guesses[i] == np.asarray(tokens[i])) & chosen[i]))
      blocks.append(f"--- window {i}: {right} of {int(chosen[i].sum())} chosen characters "
                    f"right ---\ntext:   {show(np.asarray(tokens[i]))!r}\n"
                    f"input:  {show(inputs[i])!r}\nfilled: {show(filled)!r}")
    out.text("masked_predictions.txt", "\n\n".join(blocks) + "\n")
    return ""
