"""Character-level language modelling: next-character cross-entropy, bits per character,
and compiled, seeded sampling."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from practice_jax import lora, models, optim
from practice_jax.data import text
from practice_jax.state import INIT_STREAM, STEP_STREAM, TrainState, stream_key
from practice_jax.tasks.base import FRACTION, LOWER, Task, mean_metrics

Metrics = dict[str, jax.Array]


class LanguageModelTask(Task):
  DATA_KINDS = ("text",)
  METRICS = {"loss": LOWER, "bits_per_char": LOWER, "accuracy": FRACTION}
  MONITOR = "validation/loss"
  OUTPUTS = ("samples.txt", "samples_during_training")

  @staticmethod
  def config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "language_model"
    # The samples written at each evaluation and at the end of a run (samples.txt).
    c.sampling = ml_collections.ConfigDict()
    c.sampling.prompt = "\n"
    c.sampling.length = 500
    c.sampling.temperature = 0.8
    c.sampling.top_k = 40
    c.sampling.num_samples = 2
    # One sample (seed 0) at each evaluation too, in samples_during_training/: on a CPU
    # each costs `length` forward passes of a whole window (~0.5 s for the small GPT).
    c.sampling.during_training = True
    return c

  @staticmethod
  def check(config: ml_collections.ConfigDict) -> str | None:
    s = config.task.sampling
    if s.top_k < 0 or s.length < 1 or s.num_samples < 0:
      return ("config.task.sampling.top_k and num_samples must be >= 0 and "
              "sampling.length at least 1.")
    if s.temperature <= 0:
      return f"config.task.sampling.temperature={s.temperature} must be positive."
    return models.check(config.model) or Task.check(config)

  def __init__(self, config: ml_collections.ConfigDict, source, parallel):
    super().__init__(config, source, parallel)
    self.vocab = text.Vocabulary(source.info["vocab"])
    self.block_size = config.data.block_size
    model_kwargs = {k: v for k, v in config.model.items() if k != "name"}
    self.model = models.build(config.model.name, self.vocab.size,
                              block_size=self.block_size, **model_kwargs)
    self.unroll_on_cpu = models.unrolled_on_cpu(config.model.name)

  def metadata(self) -> dict:
    return {"vocab": self.vocab.chars}

  def init_state(self, plan: optim.Plan) -> TrainState:
    self.tx, schedule = optim.build(self.config.optimizer, self.config.schedule, plan)
    self.schedules = {"learning_rate": schedule}
    key = stream_key(self.config.seed, INIT_STREAM)
    sample = jnp.zeros((1, self.block_size), jnp.int32)
    params = jax.jit(lambda k: self.model.init({"params": k}, sample, train=False))(key)
    params = lora.add(self.config, params["params"])
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=self.tx.init(params), model_state={},
                      key=stream_key(self.config.seed, STEP_STREAM))

  def logits(self, state: TrainState, tokens: jax.Array, *, train: bool = False, key=None):
    rngs = {"dropout": key} if key is not None else None
    return self.model.apply({"params": lora.merge(state.params, self.config)}, tokens,
                            train=train, rngs=rngs)

  def _sums(self, logits, targets, losses, mask) -> Metrics:
    correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    weights = jnp.broadcast_to(mask[:, None], losses.shape)
    return {"loss_sum": jnp.sum(losses * weights), "accuracy_sum": jnp.sum(correct * weights),
            "count": jnp.sum(weights)}

  def train_step(self, state: TrainState, batch) -> tuple[TrainState, Metrics]:
    inputs, targets = batch["tokens"][:, :-1], batch["tokens"][:, 1:]

    def loss_fn(params):
      logits = self.logits(state.replace(params=params), inputs, train=True,
                           key=state.step_key())
      losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
      return losses.mean(), (logits, losses)

    grads, (logits, losses) = jax.grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1, opt_state=opt_state,
                              params=optax.apply_updates(state.params, updates))
    return new_state, self._sums(logits, targets, losses, jnp.ones(targets.shape[:1]))

  def eval_step(self, state: TrainState, batch) -> Metrics:
    tokens = batch["tokens"]
    logits, targets = self.logits(state, tokens[:, :-1]), tokens[:, 1:]
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    return self._sums(logits, targets, losses, batch["mask"])

  @staticmethod
  def summarize(sums: dict) -> dict[str, float]:
    metrics = mean_metrics(sums)
    return {"loss": metrics["loss"], "bits_per_char": metrics["loss"] / math.log(2),
            "accuracy": metrics["accuracy"]}

  # -- sampling ---------------------------------------------------------------------

  @functools.partial(jax.jit, static_argnums=(0, 3, 5))
  def _generate(self, state, prompt, length, temperature, top_k, key):
    p = prompt.shape[0]
    size = max(p + length, self.block_size)
    tokens = jnp.zeros((size,), jnp.int32).at[:p].set(prompt)

    def body(i, tokens):
      # The model sees the last `block_size` tokens before position i; positions after
      # i - 1 in the window hold zeros, which a causal model never looks at.
      start = jnp.clip(i - self.block_size, 0, size - self.block_size)
      window = jax.lax.dynamic_slice_in_dim(tokens, start, self.block_size)
      logits = self.logits(state, window[None])[0, i - 1 - start] / temperature
      if top_k:
        kth = jnp.sort(logits)[-top_k]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
      token = jax.random.categorical(jax.random.fold_in(key, i), logits)
      return tokens.at[i].set(token)

    return jax.lax.fori_loop(p, p + length, body, tokens)[:p + length]

  def sample(self, state: TrainState, prompt: str, length: int, temperature: float = 1.0,
             top_k: int = 0, seed: int = 0) -> str:
    """`prompt` followed by `length` sampled characters; the same seed gives the same text."""
    tokens = self._generate(state, jnp.asarray(self.vocab.encode(prompt)), length,
                            jnp.float32(temperature), min(top_k, self.vocab.size),
                            jax.random.PRNGKey(seed))
    return self.vocab.decode(np.asarray(tokens))

  def _config_prompt(self) -> str:
    # Characters the vocabulary lacks cannot be fed to the model: drop them here (the
    # sample command refuses them instead).
    prompt = "".join(c for c in self.config.task.sampling.prompt if c in self.vocab.chars)
    return prompt or self.vocab.chars[0]

  def artifacts(self, state: TrainState, step: int, out, final: bool) -> str:
    """At each evaluation one sample (seed 0) in samples_during_training/step_<N>.txt (a
    resumed run that redoes an evaluation rewrites the same file); at the end a few
    samples, printed and written to samples.txt."""
    cfg = self.config.task.sampling
    prompt = self._config_prompt()
    if not final:
      if not cfg.get("during_training", True):
        return ""
      sample = self.sample(state, prompt, cfg.length, cfg.temperature, cfg.top_k, seed=0)
      out.text(f"samples_during_training/step_{step:08d}.txt", sample + "\n")
      return ""
    samples = [self.sample(state, prompt, cfg.length, cfg.temperature, cfg.top_k, seed)
               for seed in range(cfg.num_samples)]
    text_out = "\n\n".join(f"--- sample {i} (seed {i}) ---\n{s}"
                           for i, s in enumerate(samples))
    out.text("samples.txt", text_out + "\n")
    return text_out
