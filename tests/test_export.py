"""Export (practice_jax/export.py): each format, run in its own runtime, agrees with the
JAX model on real MNIST test images (same top-1 on every example, logits within a
tolerance); the StableHLO artifact reloads and runs with its batch sharded over several
devices; the command exports, writes each artifact's metadata and refuses bad formats."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import REPO, load_config
from practice_jax import export, train
from practice_jax.data import tfds_source
from practice_jax.errors import UserError

TOLERANCE = 1e-3      # absolute, on logits


def real_mnist_test_images(mnist_files, n: int) -> np.ndarray:
  """The first `n` real MNIST test images, uint8 [n, 28, 28, 1], read from the original
  file (much faster than through TFDS)."""
  with gzip.open(mnist_files / "t10k-images-idx3-ubyte.gz", "rb") as f:
    data = f.read(16 + n * 28 * 28)
  return np.frombuffer(data, np.uint8, offset=16).reshape(n, 28, 28, 1)


def tiny_mnist_run(workdir: str, tfds_dir: str) -> str:
  """An MLP (784-32-10) trained for a few steps on mock MNIST (random images, 64 per
  split, as the `mock_tfds` fixture makes): a trained run's workdir in seconds."""
  config = load_config("mnist_mlp")
  config.model.hidden = (32,)
  config.model.dropout = 0.0
  config.batch_size = 16
  config.eval_batch_size = 64
  config.data.validation_size = 16
  config.num_epochs = 1.0
  config.schedule.warmup_epochs = 0.0
  config.plots = False
  config.target = ""
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(tfds_source, "_hosts_reachable", lambda urls: True)
    patch.setenv("TFDS_DATA_DIR", tfds_dir)
    with tfds.testing.mock_data(num_examples=64):
      train.train_and_evaluate(config, workdir)
  return workdir


def tiny_cnn(tfds_dir: str, images: np.ndarray, labels: np.ndarray, steps: int = 8):
  """(experiment, state, step) of a small CNN trained `steps` steps of 16 on `images`
  (real MNIST) by the task's own train step (no workdir: seconds). configs/mnist.py's
  network with both pool kinds (max, then avg: nn.avg_pool is what TF Lite kept as a
  STABLEHLO_REDUCE_WINDOW that tf2onnx cannot convert), batch norm (its running
  statistics are model state), and conv_impl 'im2col' (its slicing lowers to a dynamic
  gather under a symbolic batch size: the export builds the network with nn.Conv)."""
  import jax
  config = load_config("mnist")
  config.model.features = (8, 16)
  config.model.pools = ("max", "avg")
  config.model.batch_norm = True
  config.model.dense = (32,)
  config.model.conv_impl = "im2col"
  config.batch_size = 16
  config.data.validation_size = 16
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(tfds_source, "_hosts_reachable", lambda urls: True)
    patch.setenv("TFDS_DATA_DIR", tfds_dir)
    with tfds.testing.mock_data(num_examples=64):
      exp = train.build(config)
  state = exp.task.init_state(exp.plan)
  step = jax.jit(exp.task.train_step)
  for i in range(steps):
    batch = slice(16 * i, 16 * (i + 1))
    state, _ = step(state, {"image": images[batch], "label": labels[batch]})
  return exp, state, steps


_RUNS: dict[str, str] = {}


def shared_run(tmp_path_factory) -> str:
  """One tiny trained run per test session, shared by test_export and test_serve."""
  base = str(tmp_path_factory.getbasetemp())
  if base not in _RUNS:
    _RUNS[base] = tiny_mnist_run(str(tmp_path_factory.mktemp("run")),
                                 str(tmp_path_factory.mktemp("tfds")))
  return _RUNS[base]


@pytest.fixture(scope="module")
def real_images(mnist_files):
  return real_mnist_test_images(mnist_files, 300)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  return shared_run(tmp_path_factory)


@pytest.fixture(scope="module")
def loaded(run):
  exp, state, step, _ = train.load_trained(run)
  return exp, state, step


def test_every_format_agrees_with_the_jax_model_on_real_mnist(loaded, real_images, tmp_path):
  exp, state, step = loaded
  formats = ["stablehlo", "savedmodel", "tflite"] + (["onnx"] if export.onnx_available()
                                                     else [])
  paths = export.export(exp, state, formats, str(tmp_path), "run", step)
  results = export.check(exp, state, paths, real_images, TOLERANCE)
  for fmt in formats:
    r = results[fmt]
    assert r["examples"] == len(real_images) and r["top1_agreement"] == 1.0, (fmt, r)
    assert r["max_abs_logit_diff"] <= TOLERANCE and r["passed"], (fmt, r)
    meta = json.loads((tmp_path / (export.ARTIFACTS[fmt] + ".json")).read_text())
    assert meta["input"]["shape"] == [None, 28, 28, 1] and meta["input"]["dtype"] == "uint8"
    assert meta["output"]["shape"] == [None, 10]
    assert meta["class_names"] == [str(i) for i in range(10)]
    assert meta["parity"]["passed"] and meta["size_bytes"] > 0
  assert sorted(os.listdir(tmp_path)) == sorted(   # no scratch files left
      [export.ARTIFACTS[f] for f in formats] + [export.ARTIFACTS[f] + ".json" for f in formats])
  # The artifacts take any batch size, one image included.
  for fmt in formats:
    one = export.runner(fmt, paths[fmt])(real_images[:1])
    assert one.shape == (1, 10)


def test_parity_catches_a_different_model():
  reference = np.array([[1.0, 0.0], [0.0, 1.0]])
  assert export.parity(reference, reference + 1e-4, TOLERANCE)["passed"]
  flipped = export.parity(reference, reference[:, ::-1], TOLERANCE)
  assert not flipped["passed"] and flipped["top1_disagreements"] == 2
  assert not export.parity(reference, reference + 0.01, TOLERANCE)["passed"]


def test_stablehlo_reloads_and_runs_sharded_over_four_devices(loaded, real_images, tmp_path):
  exp, state, step = loaded
  paths = export.export(exp, state, ["stablehlo"], str(tmp_path), "run", step)
  images = real_images[:50]               # not a multiple of 4: the runner pads
  np.save(tmp_path / "images.npy", images)
  reference = export.batched(export.runner("stablehlo", paths["stablehlo"]), images)
  script = textwrap.dedent(f"""
      import jax, numpy as np
      from practice_jax import export
      assert jax.device_count() == 4, jax.devices()
      images = np.load({str(tmp_path / 'images.npy')!r})
      np.save({str(tmp_path / 'sharded.npy')!r},
              export.sharded_runner({paths['stablehlo']!r})(images))
      """)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  sharded = np.load(tmp_path / "sharded.npy")
  assert sharded.shape == (50, 10)
  np.testing.assert_allclose(sharded, reference, atol=TOLERANCE)
  assert (sharded.argmax(-1) == reference.argmax(-1)).all()


def test_the_command_exports_with_metadata(run, tmp_path):
  out = tmp_path / "out"
  result = subprocess.run(
      [sys.executable, "-m", "practice_jax.export", f"--workdir={run}", f"--out={out}",
       "--format=stablehlo", "--check=false"],
      cwd=REPO, capture_output=True, text=True, timeout=180)
  assert result.returncode == 0, result.stderr[-2000:]
  assert f"stablehlo: {out / 'model.stablehlo'}" in result.stdout
  meta = json.loads((out / "model.stablehlo.json").read_text())
  assert meta["format"] == "stablehlo" and meta["platforms"] == ["cpu", "cuda", "tpu"]
  assert meta["workdir"] == os.path.abspath(run) and "parity" not in meta


def test_bad_formats_and_runs_are_refused_in_one_sentence(loaded, tmp_path, monkeypatch):
  exp, state, step = loaded
  monkeypatch.setattr(export, "onnx_available", lambda: False)
  for fmt in ("onnx", "onnx_int8"):       # refused before anything is converted
    with pytest.raises(UserError, match=r"^--format=onnx and onnx_int8 need tf2onnx and "
                                        r"onnxruntime"):
      export.export(exp, state, [fmt], str(tmp_path), "run", step,
                    representative=np.zeros((1, 28, 28, 1), np.uint8))
  assert os.listdir(tmp_path) == []
  assert export.parse_formats(["tflite", "stablehlo", "tflite"]) == ["tflite", "stablehlo"]
  with pytest.raises(UserError, match=r"^--format=keras: choose one or more of stablehlo, "
                                      r"savedmodel, tflite, tflite_int8, onnx, onnx_int8\.$"):
    export.parse_formats(["keras"])
  exp.config.task.name = "language_model"
  try:
    with pytest.raises(UserError, match="export takes image classifiers"):
      export.check_classifier(exp, "runs/x")
  finally:
    exp.config.task.name = "classification"


def test_tflite_int8_runs_in_int8_and_agrees_on_most_real_images(loaded, real_images, tmp_path):
  exp, state, step = loaded
  calibration, images = real_images[:100], real_images[100:]
  paths = export.export(exp, state, ["tflite_int8", "tflite"], str(tmp_path), "run", step,
                        representative=calibration)
  results = export.check(exp, state, paths, images, TOLERANCE, int8_agreement=0.9)
  r = results["tflite_int8"]
  assert r["passed"] and r["top1_agreement"] >= 0.9 and "tolerance" not in r, r
  assert results["tflite"]["top1_agreement"] == 1.0
  # Quantized for real: int8 weights (about a quarter of the float file), int8 tensors.
  assert os.path.getsize(paths["tflite_int8"]) < 0.4 * os.path.getsize(paths["tflite"])
  import warnings

  import tensorflow as tf
  with warnings.catch_warnings():       # its deprecation notice
    warnings.simplefilter("ignore")
    interpreter = tf.lite.Interpreter(model_path=paths["tflite_int8"])
  kinds = {d["dtype"] for d in interpreter.get_tensor_details()}
  assert np.int8 in kinds
  assert interpreter.get_input_details()[0]["dtype"] == np.uint8
  meta = json.loads((tmp_path / "model_int8.tflite.json").read_text())
  assert meta["parity"]["min_agreement"] == 0.9 and meta["quantization"][
      "representative_examples"] == 100
  assert export.runner("tflite_int8", paths["tflite_int8"])(images[:1]).shape == (1, 10)
  with pytest.raises(UserError, match="needs training images"):
    export.export(exp, state, ["tflite_int8"], str(tmp_path), "run", step)
  assert not export.parity(np.eye(4), np.eye(4)[::-1], 0.0, min_agreement=0.5)["passed"]


@pytest.fixture(scope="module")
def train_images(mnist_files):
  """The first 128 real MNIST training images and their labels."""
  with gzip.open(mnist_files / "train-images-idx3-ubyte.gz", "rb") as f:
    images = np.frombuffer(f.read(16 + 128 * 28 * 28), np.uint8, offset=16)
  with gzip.open(mnist_files / "train-labels-idx1-ubyte.gz", "rb") as f:
    labels = np.frombuffer(f.read(8 + 128), np.uint8, offset=8).astype(np.int32)
  return images.reshape(128, 28, 28, 1), labels


@pytest.fixture(scope="module")
def cnn_loaded(tmp_path_factory, train_images):
  return tiny_cnn(str(tmp_path_factory.mktemp("cnn_tfds")), *train_images)


@pytest.mark.skipif(not export.onnx_available(), reason="tf2onnx and onnxruntime are not "
                    "installed (pip install -e '.[onnx]')")
def test_a_cnn_exports_to_onnx_and_tflite_and_agrees_on_real_mnist(
    cnn_loaded, real_images, train_images, tmp_path):
  exp, state, step = cnn_loaded
  formats = ["onnx_int8", "tflite", "onnx"]    # onnx_int8 first: it makes model.onnx too
  paths = export.export(exp, state, formats, str(tmp_path), "run", step,
                        representative=train_images[0])
  results = export.check(exp, state, paths, real_images, TOLERANCE, int8_agreement=0.9)
  r = results["onnx_int8"]
  assert r["passed"] and r["top1_agreement"] >= 0.9 and "tolerance" not in r, r
  assert os.path.getsize(paths["onnx_int8"]) < 0.6 * os.path.getsize(paths["onnx"])
  meta = json.loads((tmp_path / "model_int8.onnx.json").read_text())
  assert meta["input"]["shape"] == [None, 28, 28, 1] and meta["quantization"][
      "representative_examples"] == 128 and meta["parity"]["min_agreement"] == 0.9
  for fmt in ("tflite", "onnx"):
    r = results[fmt]
    assert r["passed"] and r["top1_agreement"] == 1.0, (fmt, r)
    assert r["max_abs_logit_diff"] <= TOLERANCE, (fmt, r)
  for fmt in formats:                           # any batch size
    assert export.runner(fmt, paths[fmt])(real_images[:3]).shape == (3, 10)
  import onnx
  ops = {node.op_type for node in onnx.load(paths["onnx"]).graph.node}
  assert {"Conv", "MaxPool"} <= ops, ops      # the pools as ONNX's own ops
  quantized = onnx.load(paths["onnx_int8"]).graph
  assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= {n.op_type for n in quantized.node}
  assert any(t.data_type == onnx.TensorProto.INT8 for t in quantized.initializer)
  assert sorted(os.listdir(tmp_path)) == sorted(
      [export.ARTIFACTS[f] for f in formats] + [export.ARTIFACTS[f] + ".json" for f in formats])


def test_window_sums_become_depthwise_convolutions():
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from practice_jax.models import conv
  x = jax.random.normal(jax.random.key(0), (3, 9, 10, 5))
  pools = {
      "avg": lambda x: nn.avg_pool(x, (2, 2), strides=(2, 2)),
      "overlapping, padded": lambda x: nn.avg_pool(x, (3, 3), strides=(2, 1),
                                                   padding="SAME", count_include_pad=False),
      "max (custom gradient), in a jit": lambda x: nn.avg_pool(
          conv.max_pool(jax.jit(lambda y: 2 * y)(x)), (2, 2), strides=(1, 1)),
  }
  for name, fn in pools.items():
    rewritten = export.without_window_sums(fn)
    kinds = {e.primitive.name for e in jax.make_jaxpr(rewritten)(x).jaxpr.eqns}
    assert "reduce_window_sum" not in kinds and "conv_general_dilated" in kinds, name
    np.testing.assert_allclose(jax.jit(rewritten)(x), fn(x), atol=1e-6, err_msg=name)
  ints = jnp.arange(16, dtype=jnp.int32).reshape(1, 4, 4, 1)   # not a float: left as is
  summed = lambda x: jax.lax.reduce_window(x, 0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1),
                                           "VALID")
  np.testing.assert_array_equal(export.without_window_sums(summed)(ints), summed(ints))
