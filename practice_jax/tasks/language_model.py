"""Character-level language modelling: next-character cross-entropy, bits per character,
and compiled, seeded sampling."""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from practice_jax import models
from practice_jax.data import text
from practice_jax.parallel import is_main_process
from practice_jax.state import INIT_STREAM, STEP_STREAM, TrainState, stream_key
from practice_jax.tasks.common import all_reduce, pmap_axis

Metrics = dict[str, jax.Array]


class LanguageModelTask:

  def __init__(self, config: ml_collections.ConfigDict, metadata: dict | None = None):
    """Loads the text, or with `metadata` (from a checkpoint) builds a data-free task for
    sampling."""
    self.config = config
    self.block_size = config.data.block_size
    if metadata:
      self.vocab = text.Vocabulary(metadata["vocab"])
      self.train_data, self.num_train_examples, self.eval_splits = {}, 0, {}
    else:
      data = text.load_text(config.data)
      self.vocab = data.vocab
      self.train_data = {"tokens": text.process_shard(data.train)}
      # Every offset at which a whole (input, target) window fits is one "example".
      self.num_train_examples = len(self.train_data["tokens"]) - self.block_size
      windows = {name: text.fixed_windows(tokens, self.block_size + 1, config.data.eval_windows)
                 for name, tokens in (("validation", data.validation), ("test", data.test))}
      from practice_jax.data import in_memory
      self.eval_splits = {name: in_memory.pad_for_eval({"tokens": w}, config.eval_batch_size)
                          for name, w in windows.items()}
    model_kwargs = {k: v for k, v in config.model.items() if k != "name"}
    self.model = models.build(config.model.name, self.vocab.size,
                              block_size=self.block_size, axis_name=pmap_axis(config),
                              **model_kwargs)

  def metadata(self) -> dict:
    return {"vocab": self.vocab.chars}

  def init_state(self, tx: optax.GradientTransformation) -> TrainState:
    key = stream_key(self.config.seed, INIT_STREAM)
    sample = jnp.zeros((1, self.block_size), jnp.int32)
    params = jax.jit(lambda k: self.model.init({"params": k}, sample, train=False))(key)
    params = params["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params), model_state={},
                      key=stream_key(self.config.seed, STEP_STREAM))

  def train_batch(self, data, perm, index, batch_size):
    starts = jax.lax.dynamic_slice_in_dim(perm, index * batch_size, batch_size)
    window = jax.vmap(lambda s: jax.lax.dynamic_slice_in_dim(
        data["tokens"], s, self.block_size + 1))(starts)
    return {"tokens": window}

  def logits(self, state: TrainState, tokens: jax.Array, *, train: bool = False, key=None):
    rngs = {"dropout": key} if key is not None else None
    return self.model.apply({"params": state.params}, tokens, train=train, rngs=rngs)

  def _sums(self, logits, targets, losses, mask) -> Metrics:
    correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    weights = jnp.broadcast_to(mask[:, None], losses.shape)
    return {"loss_sum": jnp.sum(losses * weights), "correct": jnp.sum(correct * weights),
            "count": jnp.sum(weights)}

  def train_step(self, state: TrainState, batch, tx, axis_name: str | None = None
                 ) -> tuple[TrainState, Metrics]:
    inputs, targets = batch["tokens"][:, :-1], batch["tokens"][:, 1:]

    def loss_fn(params):
      logits = self.logits(state.replace(params=params), inputs, train=True,
                           key=state.step_key())
      losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
      return losses.mean(), (logits, losses)

    grads, (logits, losses) = jax.grad(loss_fn, has_aux=True)(state.params)
    grads = all_reduce(jax.lax.pmean, grads, axis_name)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1, opt_state=opt_state,
                              params=optax.apply_updates(state.params, updates))
    return new_state, all_reduce(jax.lax.psum, self._sums(
        logits, targets, losses, jnp.ones(targets.shape[:1])), axis_name)

  def eval_step(self, state: TrainState, batch) -> Metrics:
    tokens = batch["tokens"]
    logits, targets = self.logits(state, tokens[:, :-1]), tokens[:, 1:]
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    return self._sums(logits, targets, losses, batch["mask"])

  @staticmethod
  def summarize(sums: dict[str, Any]) -> dict[str, float]:
    count = max(float(np.asarray(sums["count"])), 1.0)
    loss = float(np.asarray(sums["loss_sum"])) / count
    return {"loss": loss, "bits_per_char": loss / math.log(2),
            "accuracy": float(np.asarray(sums["correct"])) / count}

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
    prompt = "".join(c for c in self.config.sampling.prompt if c in self.vocab.chars)
    return prompt or self.vocab.chars[0]

  @staticmethod
  def output_files() -> list[str]:
    """Files this task writes in the workdir (deleted by --config_change=restart)."""
    return ["samples.txt", "samples_during_training"]

  def on_evaluation(self, state: TrainState, workdir: str, step: int) -> None:
    """Writes one sample (seed 0) to samples_during_training/step_<N>.txt; a resumed run
    that redoes an evaluation rewrites the same file."""
    cfg = self.config.sampling
    sample = self.sample(state, self._config_prompt(), cfg.length, cfg.temperature,
                         cfg.top_k, seed=0)
    if not is_main_process():
      return
    folder = os.path.join(workdir, "samples_during_training")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"step_{step:08d}.txt"), "w", encoding="utf-8") as f:
      f.write(sample + "\n")

  def write_report(self, state: TrainState, parallel, workdir: str, split: str = "test"
                   ) -> dict[str, Any]:
    """A few samples from the model, printed and written to samples.txt."""
    del parallel, split
    cfg = self.config.sampling
    prompt = self._config_prompt()
    samples = [self.sample(state, prompt, cfg.length, cfg.temperature, cfg.top_k, seed)
               for seed in range(cfg.num_samples)]
    text_out = "\n\n".join(f"--- sample {i} (seed {i}) ---\n{s}" for i, s in enumerate(samples))
    if not is_main_process():
      return {"text": "", "samples": samples}
    with open(os.path.join(workdir, "samples.txt"), "w", encoding="utf-8") as f:
      f.write(text_out + "\n")
    return {"text": text_out, "samples": samples}
