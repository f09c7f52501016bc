"""`python -m practice_jax.inspect`: errors, filters, feature maps, saliency and attention
of tiny trained runs, checked against what they claim to show, and the one-sentence
refusals where a picture does not apply."""

from __future__ import annotations

import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from conftest import array_task, load_config, tiny
from practice_jax import inspect as inspect_lib
from practice_jax import optim, train
from practice_jax.data import tfds_source
from practice_jax.errors import UserError


@pytest.fixture(scope="module")
def mocked(tmp_path_factory):
  """mock_tfds for the whole module (the runs are trained once and inspected many times)."""
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(tfds_source, "_hosts_reachable", lambda urls: True)
    mp.setenv("TFDS_DATA_DIR", str(tmp_path_factory.mktemp("tfds")))
    with tfds.testing.mock_data(num_examples=64):
      yield


@pytest.fixture(scope="module")
def cnn(mocked, tmp_path_factory):
  """A tiny CNN trained 2 steps on mock MNIST: (workdir, experiment, state), loaded once."""
  config = tiny(load_config("mnist"))
  config.num_steps = 2
  config.steps_per_dispatch = 1
  config.plots = False
  config.model.features = (4, 8)
  config.model.dense = (16,)
  workdir = str(tmp_path_factory.mktemp("cnn"))
  train.train_and_evaluate(config, workdir)
  exp, state, _, _ = train.load_trained(workdir, with_data=True)
  return workdir, exp, state


@pytest.fixture(scope="module")
def gpt(tmp_path_factory):
  """A tiny GPT, initialised (not trained): (workdir holding only its config, what
  load_trained would give as the experiment, state)."""
  config = load_config("shakespeare_gpt_cpu")
  config.data.block_size = 16
  config.model.update(num_layers=2, num_heads=2, embed_dim=16)
  chars = "".join(sorted(set("hello world, jax is fun!")))
  task = array_task(config, {"tokens": np.zeros((4, 17), np.int32)},
                    info={"vocab": chars})
  state = task.init_state(optim.Plan(total_steps=10))
  workdir = tmp_path_factory.mktemp("gpt")
  (workdir / "config.json").write_text(json.dumps(config.to_dict(), default=str))
  return str(workdir), types.SimpleNamespace(task=task, config=config), state


def draw(run, *argv):
  """inspect's picture for a loaded run: (what it says, the PNG's path)."""
  workdir, exp, state = run
  return inspect_lib.picture(exp, state, inspect_lib.parse([workdir, *argv]))


def png(path) -> tuple[int, int]:
  with Image.open(path) as image:
    assert image.format == "PNG"
    return image.size


def test_errors_are_the_most_confident_wrong_examples(cnn, tmp_path):
  _, exp, state = cnn
  said, path = draw(cnn, "--what=errors", "--n=9", f"--out={tmp_path}")
  images, labels, probs = inspect_lib.classify_split(exp, state, "test")
  np.testing.assert_allclose(
      probs, jax.nn.softmax(jax.jit(exp.task.logits)(state, images), -1), atol=1e-5)
  predicted = probs.argmax(-1)
  wrong = np.flatnonzero(predicted != labels)
  assert len(wrong) and f"{len(wrong)} of {len(labels)} test examples wrong" in said
  first = wrong[np.argmax(probs[wrong, predicted[wrong]])]        # the most confident
  assert f"#{first} " in said.split("the most confident: ")[1].split(",")[0]
  assert path == str(tmp_path / "errors.png") and png(path)[0] > 300


def test_filters_through_the_command(cnn):
  workdir, _, state = cnn
  said = inspect_lib.run([workdir, "--what=filters"])       # restores the checkpoint
  name, kernel = inspect_lib.first_conv_kernel(state.params)
  assert kernel.shape == (3, 3, 1, 4) and name.endswith("0")
  assert said.startswith(f"4 kernels of {name} (3x3x1).")
  assert "Written: " + f"{workdir}/inside/filters.png (last checkpoint, step 2)" in said
  png(f"{workdir}/inside/filters.png")


def test_feature_maps_are_the_conv_outputs(cnn):
  _, exp, state = cnn
  image = np.asarray(exp.source.eval_splits["test"]["image"][:1])
  layers = inspect_lib.conv_activations(exp.task, state, image)
  assert [a.shape for _, a in layers] == [(1, 28, 28, 4), (1, 14, 14, 8)]
  # The first is the convolution of the standardised image with the first kernel.
  _, kernel = inspect_lib.first_conv_kernel(state.params)
  bias = next(v["bias"] for v in state.params.values() if "kernel" in v)
  expected = jax.lax.conv_general_dilated(
      exp.task.preprocess(image), kernel, (1, 1), "SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias
  np.testing.assert_allclose(layers[0][1], expected, atol=1e-4)
  said, path = draw(cnn, "--what=feature_maps", "--index=3")
  assert said.startswith("2 conv layers for test #3") and png(path)


def test_saliency_is_the_gradient_of_the_predicted_logit(cnn, tmp_path):
  _, exp, state = cnn
  task = exp.task
  images = np.asarray(exp.source.eval_splits["test"]["image"][:2])
  cls, prob, vanilla, smooth = inspect_lib.saliency_maps(task, state, images, samples=3,
                                                         noise=0.0)
  logits = jax.jit(task.logits)(state, images)
  np.testing.assert_array_equal(cls, np.argmax(logits, -1))
  np.testing.assert_allclose(prob, jax.nn.softmax(logits, -1)[np.arange(2), cls], atol=1e-5)
  grad = jax.jit(jax.grad(lambda p: task._apply(state.params, state.model_state,
                                        task.standardise(p), train=False)[0][0, cls[0]]))(
      task.pixels(jnp.asarray(images[:1])))
  np.testing.assert_allclose(vanilla[0], jnp.abs(grad[0]).max(-1), rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(smooth, vanilla, rtol=1e-4, atol=1e-7)   # no noise: the same
  noisy = inspect_lib.saliency_maps(task, state, images, samples=3, noise=0.3)[3]
  assert not np.allclose(noisy, vanilla)
  # An image file, read as predict reads it.
  Image.fromarray(images[0, ..., 0]).save(tmp_path / "digit.png")
  said, path = draw(cnn, "--what=saliency", f"--input={tmp_path / 'digit.png'}",
                    "--samples=3", f"--out={tmp_path}")
  assert said.startswith("saliency of 1 images: digit.png pred")
  assert png(path)[1] > 150


def test_attention_weights_reproduce_the_models_attention(gpt, tmp_path):
  from flax import traverse_util
  _, exp, state = gpt
  task = exp.task
  tokens = np.asarray(task.vocab.encode("hello world, jax"), np.int32)
  weights = inspect_lib.attention_weights(task, state, tokens)
  t = len(tokens)
  assert weights.shape == (2, 2, t, t)
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
  assert np.all(np.triu(weights, 1) == 0)                       # causal
  assert not np.allclose(weights[0, 0], weights[1, 1])
  # The weights, applied to the values and the output projection, give the attention
  # module's own output: they are the weights the model used.
  captured = jax.jit(lambda params, tokens: task.model.apply(
      {"params": params}, tokens[None], train=False, mutable=["intermediates"],
      capture_intermediates=lambda m, method: method == "__call__" and m.name in (
          "qkv", "proj"))[1])(state.params, jnp.asarray(tokens))
  flat = traverse_util.flatten_dict(dict(captured["intermediates"]))
  for layer in range(2):
    block = f"Block_{layer}"
    qkv = next(v[0] for p, v in flat.items() if p[0] == block and "qkv" in p)
    proj = next(v[0] for p, v in flat.items() if p[0] == block and "proj" in p)
    v = jnp.split(qkv.reshape(1, t, 6, 8), 3, axis=2)[2]
    y = jnp.einsum("hqk,khd->qhd", weights[layer], v[0]).reshape(t, 16)
    dense = state.params[block]["CausalSelfAttention_0"]["proj"]
    np.testing.assert_allclose(y @ dense["kernel"] + dense["bias"], proj[0], atol=1e-5)
  said, path = draw(gpt, "--what=attention", "--prompt=hello", f"--out={tmp_path}")
  assert said.startswith("2 layers x 2 heads over 5 characters") and png(path)


def test_each_refuses_in_one_sentence_where_it_does_not_apply(cnn, gpt, capsys):
  cases = [(gpt[0], "errors", "applies to image classifiers"),
           (gpt[0], "saliency", "applies to image classifiers"),
           (gpt[0], "feature_maps", "applies to image classifiers"),
           (cnn[0], "attention", "applies to the GPT language model")]
  for workdir, what, words in cases:         # decided from the config, before loading
    with pytest.raises(UserError, match=words) as e:
      inspect_lib.run([workdir, f"--what={what}"])
    assert ". " not in str(e.value) and str(e.value).endswith(".")
  with pytest.raises(UserError, match="needs a convolutional model; .* has no "
                                      "convolution layer"):
    draw(gpt, "--what=filters")
  assert inspect_lib.main([cnn[0], "--what=attention"]) == 2
  assert capsys.readouterr().err.startswith("error: --what=attention applies")
  with pytest.raises(UserError, match="has no split 'nope'"):
    draw(cnn, "--what=errors", "--split=nope")
  with pytest.raises(UserError, match="never saw"):
    draw(gpt, "--what=attention", "--prompt=\x01")
