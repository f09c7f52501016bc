"""Language modelling: causality, initial loss, memorisation, sampling, vocabulary."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_config, tiny
from practice_jax import optim, train
from practice_jax.data.text import Vocabulary, windows_source
from practice_jax.parallel import DataParallel
from practice_jax.tasks.language_model import LanguageModelTask

TEXT = "hello world, jax is fun! " * 4
VOCAB = "".join(sorted(set(TEXT)))


def _task(name, **model):
  config = load_config(name)
  config.data.block_size = 24
  config.model.update(model)
  config.optimizer.learning_rate = 3e-3
  config.optimizer.weight_decay = 0.0
  config.schedule.name = "constant"
  vocab = Vocabulary(VOCAB)
  source = windows_source(vocab.encode(TEXT), {}, vocab, config.data.block_size,
                          config.data.eval_windows, config.seed)
  return LanguageModelTask(config, source, DataParallel()), config


def _init(task):
  """The initial state; the task builds its optimizer (a constant learning rate)."""
  return task.init_state(optim.Plan(total_steps=300))


MODELS = [("shakespeare_gpt_cpu", {"num_layers": 2, "embed_dim": 32, "num_heads": 2}),
          ("shakespeare_lstm", {"hidden": 32, "embed_dim": 16}),
          ("shakespeare_lstm", {"hidden": 32, "embed_dim": 16, "cell": "gru"})]


@pytest.mark.parametrize("name,model", MODELS, ids=["gpt", "lstm", "gru"])
def test_changing_a_future_character_never_changes_earlier_logits(name, model):
  task, config = _task(name, **model)
  state = _init(task)
  tokens = jax.random.randint(jax.random.key(0), (2, 24), 0, len(VOCAB))
  changed = tokens.at[:, 15].set((tokens[:, 15] + 1) % len(VOCAB))
  a, b = task.logits(state, tokens), task.logits(state, changed)
  chex.assert_shape(a, (2, 24, len(VOCAB)))
  chex.assert_trees_all_close(a[:, :15], b[:, :15], atol=1e-6)
  assert not np.allclose(a[:, 15:], b[:, 15:])


@pytest.mark.parametrize("name,model", MODELS, ids=["gpt", "lstm", "gru"])
def test_untrained_loss_is_about_log_vocab_and_memorising_drives_it_near_zero(name, model):
  task, config = _task(name, **model)
  state = _init(task)
  tokens = jnp.asarray(task.vocab.encode(TEXT))
  starts = jnp.arange(0, len(TEXT) - 25, 3)
  batch = {"tokens": jax.vmap(lambda s: jax.lax.dynamic_slice_in_dim(tokens, s, 25))(starts)}
  assert float(task.schedules["learning_rate"](299)) == pytest.approx(3e-3)
  step = jax.jit(task.train_step)
  _, first = step(state, batch)
  first_loss = task.summarize(first)["loss"]
  assert first_loss == pytest.approx(math.log(len(VOCAB)), abs=0.3)
  for _ in range(300):
    state, sums = step(state, batch)
  assert task.summarize(sums)["loss"] < 0.1


def test_gpt_attention_equals_jax_dot_product_attention():
  # models/gpt.py writes causal attention out (faster on XLA:CPU); it must compute what
  # jax.nn.dot_product_attention(is_causal=True) computes, with the same parameters.
  from practice_jax.models.gpt import CausalSelfAttention

  attention = CausalSelfAttention(num_heads=4, dropout=0.0, num_layers=2)
  x = jax.random.normal(jax.random.key(0), (3, 16, 32))
  params = attention.init(jax.random.key(1), x, False)
  p = params["params"]
  qkv = x @ p["qkv"]["kernel"] + p["qkv"]["bias"]
  q, k, v = jnp.split(qkv.reshape(3, 16, 12, 8), 3, axis=2)
  y = jax.nn.dot_product_attention(q, k, v, is_causal=True).reshape(3, 16, 32)
  expected = y @ p["proj"]["kernel"] + p["proj"]["bias"]
  chex.assert_trees_all_close(attention.apply(params, x, False), expected, atol=1e-5, rtol=1e-5)
  assert set(p) == {"qkv", "proj"}            # parameter paths that checkpoints rely on


def test_sampling_is_deterministic_and_respects_top_k():
  task, config = _task(MODELS[0][0], **MODELS[0][1])
  state = _init(task)
  a = task.sample(state, "hello", 15, temperature=1.0, top_k=0, seed=3)
  b = task.sample(state, "hello", 15, temperature=1.0, top_k=0, seed=3)
  c = task.sample(state, "hello", 15, temperature=1.0, top_k=0, seed=4)
  assert a == b and a != c and a.startswith("hello") and len(a) == 20
  greedy = {task.sample(state, "hello", 15, 1.0, top_k=1, seed=s) for s in range(3)}
  assert len(greedy) == 1                     # top-1 leaves no choice: seed-independent
  text = task.sample(state, "hello", 15, temperature=1.0, top_k=3, seed=0)
  tokens = jnp.asarray(task.vocab.encode(text))[None]
  logits = task.logits(state, jnp.pad(tokens, ((0, 0), (0, 24 - tokens.shape[1]))))[0]
  for i in range(5, 20):   # every sampled character was among the 3 likeliest
    assert int(tokens[0, i]) in np.argsort(-np.asarray(logits[i - 1]))[:3]


def test_sampling_longer_than_the_context_slides_the_window():
  task, config = _task(MODELS[0][0], **MODELS[0][1])
  state = _init(task)
  text = task.sample(state, "h", 60, temperature=1.0, top_k=1, seed=0)     # greedy
  assert len(text) == 61 and set(text) <= set(VOCAB)
  tokens = task.vocab.encode(text)
  for i in (30, 45, 60):          # past the 24-character context: the last 24 decide
    window = jnp.asarray(tokens[i - 24:i])[None]
    assert tokens[i] == int(jnp.argmax(task.logits(state, window)[0, -1]))


def test_vocabulary_round_trips_through_the_checkpoint(mock_tfds, tmp_path):
  config = tiny(load_config("shakespeare_gpt_cpu"))
  config.num_steps = 4
  config.eval_every_steps = 2
  config.task.sampling.length = 20
  config.task.sampling.during_training = True     # the CPU config turns them off
  config.model.num_layers = 1
  record = train.train_and_evaluate(config, str(tmp_path))
  test = record["final"]["test"]
  assert record["steps"] == 4 and test["bits_per_char"] == pytest.approx(test["loss"] / math.log(2))
  trained_vocab = train.build(config).task.vocab.chars
  exp, state, step, _ = train.load_trained(str(tmp_path))     # no dataset: metadata only
  assert exp.source.num_train_examples == 0 and exp.source.eval_splits == {}
  assert exp.task.vocab.chars == trained_vocab
  assert step == 4
  assert len(exp.task.sample(state, trained_vocab[0], 10, 0.8, 5, 0)) == 11
  assert (tmp_path / "samples.txt").read_text().count("--- sample") == 2
  # One sample at every evaluation, the one before training (step 0) included.
  assert sorted(p.name for p in (tmp_path / "samples_during_training").iterdir()) == [
      "step_00000000.txt", "step_00000002.txt", "step_00000004.txt"]

  # The sample command needs only the workdir (no dataset): run it as a user would.
  import subprocess
  import sys
  from conftest import REPO
  def sample(seed):
    return subprocess.run([sys.executable, "-m", "practice_jax.sample", f"--workdir={tmp_path}",
                           f"--prompt={trained_vocab[1]}", "--length=30", "--top_k=3",
                           f"--seed={seed}"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
  first, again = sample(0), sample(0)
  assert first.returncode == 0, first.stderr[-2000:]
  assert first.stdout == again.stdout and first.stdout.startswith(trained_vocab[1])
  assert len(first.stdout) == 1 + 30 + 1        # prompt, 30 characters, print's newline
  # The command samples as the task does, with the given temperature and top_k.
  assert first.stdout == exp.task.sample(state, trained_vocab[1], 30, 0.8, 3, 0) + "\n"
  assert first.stdout != exp.task.sample(state, trained_vocab[1], 30, 0.8, 0, 0) + "\n"
  bad = subprocess.run([sys.executable, "-m", "practice_jax.sample", f"--workdir={tmp_path}",
                        "--temperature=0"], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
  assert bad.returncode == 2 and "--temperature=0.0 must be positive" in bad.stderr


@pytest.mark.parametrize("during_training", [True, False])
def test_samples_during_training_can_be_turned_off(tmp_path, during_training):
  from practice_jax.reporting.artifacts import Artifacts
  task, config = _task("shakespeare_gpt_cpu", num_layers=1, embed_dim=16, num_heads=2)
  config.task.sampling.length = 5
  config.task.sampling.during_training = during_training
  state, out = _init(task), Artifacts(str(tmp_path), active=True)
  assert task.artifacts(state, 7, out, final=False) == ""
  written = sorted(p.name for p in tmp_path.glob("samples_during_training/*"))
  assert written == (["step_00000007.txt"] if during_training else [])
  final = task.artifacts(state, 7, out, final=True)       # the final samples either way
  assert final.count("--- sample") == 2 and (tmp_path / "samples.txt").exists()
