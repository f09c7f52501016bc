"""Self-supervised pre-training and its transfer: BERT's masking rule, the loss on the
chosen positions only, a bidirectional encoder, speaker-line tags, a denoising
autoencoder whose encoder is a classifier's trunk, and each task end to end (with
init_from moving the pre-trained encoders)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import image_info, load_config, tiny
from practice_jax import models, optim, train
from practice_jax.config_base import base_config, model_config
from practice_jax.data.in_memory import ArraySource
from practice_jax.data.text import Vocabulary, speaker_labels, windows_source
from practice_jax.parallel import DataParallel
from practice_jax.tasks.autoencoder import DenoisingAutoencoderTask, corrupt
from practice_jax.tasks.masked_lm import MaskedLMTask, bert_mask

TINY_BERT = {"num_layers": 1, "num_heads": 2, "embed_dim": 16, "dropout": 0.0}


def test_bert_masking_follows_the_80_10_10_rule():
  vocab, mask_id, n = 50, 50, 400_000
  tokens = jax.random.randint(jax.random.key(0), (n,), 0, vocab)
  inputs, chosen = bert_mask(jax.random.key(1), tokens, vocab, mask_id)
  inputs, chosen, tokens = map(np.asarray, (inputs, chosen, tokens))
  assert chosen.mean() == pytest.approx(0.15, abs=0.003)
  np.testing.assert_array_equal(inputs[~chosen], tokens[~chosen])   # others untouched
  picked, original = inputs[chosen], tokens[chosen]
  assert (picked == mask_id).mean() == pytest.approx(0.8, abs=0.006)
  random = (picked != mask_id) & (picked != original)
  # 10% random characters, of which 1 in 50 happens to be the original one.
  assert random.mean() == pytest.approx(0.1 * 49 / 50, abs=0.004)
  assert (picked == original).mean() == pytest.approx(0.1 + 0.1 / 50, abs=0.004)
  assert picked.max() <= mask_id and inputs[inputs != mask_id].max() < vocab
  again, _ = bert_mask(jax.random.key(1), jnp.asarray(tokens), vocab, mask_id)
  np.testing.assert_array_equal(np.asarray(again), inputs)         # a function of the key


def test_the_loss_counts_only_the_chosen_positions():
  logits = jax.random.normal(jax.random.key(0), (2, 6, 5))
  targets = jnp.array([[0, 1, 2, 3, 4, 0], [1, 1, 1, 1, 1, 1]])
  chosen = jnp.array([[1, 0, 0, 1, 0, 0], [0, 0, 1, 0, 0, 1]], bool)
  sums = MaskedLMTask.sums(logits, targets, chosen)
  assert float(sums["count"]) == 4
  other = targets.at[0, 1].set(3).at[1, 0].set(4)                  # unchosen positions
  chex.assert_trees_all_close(MaskedLMTask.sums(logits, other, chosen), sums)
  assert float(MaskedLMTask.sums(logits, targets.at[0, 0].set(2), chosen)["loss_sum"]) != \
      pytest.approx(float(sums["loss_sum"]))
  grad = jax.grad(lambda x: MaskedLMTask.sums(x, targets, chosen)["loss_sum"])(logits)
  np.testing.assert_array_equal(np.abs(grad).sum(-1) > 0, np.asarray(chosen))


def _apply(model, tokens):
  params = model.init(jax.random.key(0), tokens)
  return lambda x: model.apply(params, x)


def test_the_encoder_sees_both_ways_and_the_gpt_stays_causal():
  tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, 11)
  changed = tokens.at[:, 10].set((tokens[:, 10] + 1) % 11)
  bert = _apply(models.build("bert", 11, block_size=16, vocab_size=11, **TINY_BERT), tokens)
  chex.assert_shape(bert(tokens), (2, 16, 11))
  assert not np.allclose(bert(tokens)[:, :10], bert(changed)[:, :10])   # earlier ones too
  gpt = _apply(models.build("gpt", 11, block_size=16, num_layers=1, num_heads=2,
                            embed_dim=16, dropout=0.0), tokens)
  chex.assert_trees_all_close(gpt(tokens)[:, :10], gpt(changed)[:, :10], atol=1e-6)
  # The tagger and the masked model share the encoder's paths and shapes; the mask token
  # is one embedding row past the vocabulary.
  tagger = models.build("bert", 2, block_size=16, vocab_size=11, **TINY_BERT)
  masked = models.build("bert", 11, block_size=16, vocab_size=11, **TINY_BERT)
  shapes = lambda m: jax.tree.map(jnp.shape, m.init(jax.random.key(0), tokens)["params"])
  assert shapes(tagger)["encoder"] == shapes(masked)["encoder"]
  assert shapes(masked)["encoder"]["wte"]["embedding"] == (12, 16)
  assert set(shapes(tagger)) == {"encoder", "head"}


def test_speaker_lines_are_tagged_by_their_context():
  text = ("First Citizen:\nBefore we proceed:\nhear me.\n\nAll:\nSpeak:\n\n"
          "SICINIUS:\nthus:\n")
  tags = "".join(str(t) for t in speaker_labels(text))
  lines = text.split("\n")
  per_line, i = [], 0
  for line in lines:
    per_line.append(tags[i:i + len(line)])
    i += len(line) + 1
  assert per_line == ["1" * 14, "0" * 18, "0" * 8, "", "1" * 4, "0" * 6, "", "1" * 9,
                      "0" * 5, ""]
  assert all(tags[i] == "0" for i, c in enumerate(text) if c == "\n")
  assert speaker_labels("\nROMEO:\nHo:").tolist() == [0] + [1] * 6 + [0] * 4


def test_labelled_windows_stay_aligned_and_the_language_model_windows_are_unchanged():
  vocab = Vocabulary("abcdefg")
  tokens = np.arange(300, dtype=np.int32) % 7
  plain = windows_source(tokens, {}, vocab, 8, 0, seed=0)
  assert set(plain.element_spec) == {"tokens"} and "label_names" not in plain.info
  labels = np.arange(300, dtype=np.int32)
  source = windows_source(tokens, {"validation": tokens}, vocab, 8, 0, seed=0,
                          labels=(labels, {"validation": labels}, ("a", "b")))
  source.bind(DataParallel())
  batch = jax.device_get(source.batches(0, 2, 5))
  chex.assert_shape(batch["labels"], (2, 5, 9))
  np.testing.assert_array_equal(batch["labels"] % 7, batch["tokens"])
  np.testing.assert_array_equal(np.diff(batch["labels"], axis=-1), 1)   # contiguous
  np.testing.assert_array_equal(source.eval_splits["validation"]["labels"] % 7,
                                source.eval_splits["validation"]["tokens"])
  assert source.info["label_names"] == ["a", "b"]


def _image_ae_config():
  config = base_config("autoencoder", "mnist", "conv_autoencoder")
  # conv_impl 'xla': no per-shape autotuning of the lowering in a test.
  config.model = model_config("conv_autoencoder", features=(4, 8), pools=("avg", "max"),
                              conv_impl="xla")
  config.optimizer.learning_rate = 3e-3
  config.schedule.name = "constant"
  return config


def test_the_autoencoder_encoder_is_the_cnn_trunk_and_denoising_trains():
  config = _image_ae_config()
  cnn = models.build("cnn", 10, features=(4, 8), pools=("avg", "max"), dense=(16,),
                     conv_impl="xla")
  x = jnp.zeros((1, 16, 16, 1))
  cnn_shapes = jax.tree.map(jnp.shape, cnn.init(jax.random.key(0), x)["params"])
  rng = np.random.default_rng(0)
  images = np.zeros((64, 16, 16, 1), np.uint8)     # bars at random rows: structure to learn
  for i, row in enumerate(rng.integers(2, 14, 64)):
    images[i, row - 2:row + 2, 2:14] = 255
  source = ArraySource({"image": images, "label": np.zeros(64, np.int32)}, {},
                       image_info(10, (16, 16, 1), mean=0.2, std=0.4), seed=0)
  task = DenoisingAutoencoderTask(config, source, DataParallel())
  state = task.init_state(optim.Plan(total_steps=60))
  ae_shapes = jax.tree.map(jnp.shape, state.params)
  assert set(ae_shapes) == {"Conv_0", "Conv_1", "decoder"}
  for name in ("Conv_0", "Conv_1"):
    assert ae_shapes[name] == cnn_shapes[name]
  step = jax.jit(task.train_step)
  batch = {"image": jnp.asarray(images[:32]), "label": jnp.zeros(32, jnp.int32)}
  losses = []
  for _ in range(60):
    state, sums = step(state, batch)
    losses.append(task.summarize(sums))
  assert losses[-1]["loss"] < 0.5 * losses[0]["loss"]
  assert losses[-1]["loss"] < losses[-1]["input_mse"]        # better than the input
  # Corruption: masked patches are black, noise stays in [0, 1], the key decides.
  pixels = jnp.full((2, 8, 8, 1), 0.5)
  masked = corrupt(jax.random.key(0), pixels, 0.0, 0.5, 4)
  assert set(np.unique(np.asarray(masked)).tolist()) <= {0.0, 0.5}
  assert 0 < float(jnp.mean(masked == 0)) < 1
  noisy = corrupt(jax.random.key(0), pixels, 0.3, 0.0, 4)
  assert float(noisy.min()) >= 0 and float(noisy.max()) <= 1
  chex.assert_trees_all_equal(noisy, corrupt(jax.random.key(0), pixels, 0.3, 0.0, 4))


def _text_config(name):
  config = tiny(load_config(name))
  config.num_steps = config.eval_every_steps = config.steps_per_dispatch = 2
  config.data.block_size = 16
  config.data.eval_windows = 4
  config.model.update(TINY_BERT)
  config.plots = False
  config.init_from.workdir = ""
  return config


def test_masked_lm_pretrains_and_its_encoder_moves_into_the_tagger(mock_tfds, tmp_path):
  source = str(tmp_path / "mlm")
  record = train.train_and_evaluate(_text_config("shakespeare_masked_lm"), source)
  assert record["steps"] == 2 and np.isfinite(record["final"]["test"]["loss"])
  assert (tmp_path / "mlm" / "masked_predictions.txt").is_file()
  exp, pretrained, _, _ = train.load_trained(source, "last")
  assert exp.task.metadata()["mask_token"] == len(exp.task.vocab.chars)

  config = _text_config("shakespeare_token_tagging_finetune")
  config.init_from.workdir = source
  config.init_from.which = "last"
  workdir = str(tmp_path / "tagger")
  exp = train.build(config)
  fresh = exp.task.init_state(exp.plan)
  record = train.train_and_evaluate(config, workdir)
  final = record["final"]["test"]
  assert record["steps"] == 2 and set(final) == {"loss", "accuracy", "macro_f1"}
  report = (tmp_path / "tagger" / "test_report.txt").read_text()
  assert "dialogue" in report and "speaker" in report and "f1-score" in report
  taken = record["init_from"]
  assert taken["tensors_taken"] == len(jax.tree.leaves(pretrained.params["encoder"]))
  # The tagger starts from the pre-trained encoder and a fresh head.
  from practice_jax import transfer
  started = transfer.start(exp, str(tmp_path / "again"), exp.parallel.put_state(fresh))
  chex.assert_trees_all_equal(started.params["encoder"], pretrained.params["encoder"])
  chex.assert_trees_all_equal(started.params["head"], fresh.params["head"])


def test_the_denoising_autoencoder_runs_and_its_encoder_starts_a_classifier(mock_tfds,
                                                                            tmp_path):
  config = tiny(load_config("mnist_denoising_ae"))
  config.model.features, config.model.conv_impl = (4, 8), "xla"
  config.num_epochs = 2 / 6                       # two steps on the mock data
  config.steps_per_dispatch = 1
  record = train.train_and_evaluate(config, str(tmp_path / "ae"))
  final = record["final"]["test"]
  assert record["steps"] == 2 and np.isfinite(final["loss"]) and final["input_mse"] > 0
  assert (tmp_path / "ae" / "denoising.png").is_file()
  assert any((tmp_path / "ae" / "images_during_training").iterdir())
  _, ae_state, _, _ = train.load_trained(str(tmp_path / "ae"), "last")

  classifier = tiny(load_config("mnist"))
  classifier.model.features, classifier.model.dense = (4, 8), (16,)
  classifier.model.conv_impl = "xla"
  classifier.num_steps = 1
  classifier.init_from.workdir = str(tmp_path / "ae")
  classifier.init_from.which = "last"
  classifier.init_from.include = "^Conv_"
  exp = train.build(classifier)
  from practice_jax import transfer
  state = transfer.start(exp, str(tmp_path / "cls"),
                         exp.parallel.put_state(exp.task.init_state(exp.plan)))
  for name in ("Conv_0", "Conv_1"):
    chex.assert_trees_all_equal(state.params[name], ae_state.params[name])


@pytest.mark.parametrize("name", ["shakespeare_masked_lm", "shakespeare_token_tagging",
                                  "mnist_denoising_ae"])
def test_wrong_settings_are_refused_in_one_sentence(name):
  from practice_jax.validation import validate
  from practice_jax.errors import UserError
  config = load_config(name)
  if name == "shakespeare_masked_lm":
    config.task.mask_fraction, config.task.random_fraction = 0.9, 0.2
    match = "add up to at most 1"
  elif name == "shakespeare_token_tagging":
    config.data.labels = "none"
    match = "needs a tag for every character"
  else:
    config.task.noise_std = config.task.mask_ratio = 0.0
    match = "nothing corrupts the input"
  with pytest.raises(UserError, match=match):
    validate(config, 1)
