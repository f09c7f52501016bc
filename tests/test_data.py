import json
import os
import subprocess
import sys
import textwrap
import time

import chex
import jax
import numpy as np
import pytest

from practice_jax.config_base import base_config
from practice_jax.data import catalogue, in_memory, tfds_source
from practice_jax.errors import UserError
from practice_jax.parallel import DataParallel
from practice_jax.state import DATA_STREAM, stream_key
from practice_jax.tasks.base import pad_for_eval


@pytest.fixture(autouse=True)
def own_array_cache(tmp_path, monkeypatch):
  """Every test's decoded-array cache in its own folder, never the user's."""
  monkeypatch.setenv("PRACTICE_JAX_DATA_CACHE", str(tmp_path / "cache"))


def test_epoch_permutation_is_a_function_of_seed_and_epoch():
  key = stream_key(0, DATA_STREAM)
  a = np.asarray(in_memory.epoch_permutation(key, 3, 100))
  b = np.asarray(in_memory.epoch_permutation(key, 3, 100))
  c = np.asarray(in_memory.epoch_permutation(key, 4, 100))
  other_seed = np.asarray(in_memory.epoch_permutation(stream_key(1, DATA_STREAM), 3, 100))
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(np.sort(a), np.arange(100))
  assert not np.array_equal(a, c) and not np.array_equal(a, other_seed)


def test_validation_is_the_last_slice_of_train():
  train = {"image": np.arange(10)[:, None], "label": np.arange(10)}
  rest, val = in_memory.split_validation(train, 3)
  np.testing.assert_array_equal(val["label"], [7, 8, 9])
  np.testing.assert_array_equal(rest["label"], np.arange(7))
  assert in_memory.split_validation(train, 0)[1] is None
  with pytest.raises(UserError, match="validation_size=10"):
    in_memory.split_validation(train, 10)


def test_pad_for_eval_masks_the_padding():
  split = {"image": np.ones((10, 2, 2, 1), np.uint8), "label": np.arange(10, dtype=np.int32)}
  padded = pad_for_eval(split, 4)
  chex.assert_shape(padded["image"], (12, 2, 2, 1))
  np.testing.assert_array_equal(padded["mask"], [1] * 10 + [0, 0])
  np.testing.assert_array_equal(padded["label"][:10], split["label"])


def test_array_source_batches_follow_the_epoch_permutation():
  n, local_batch = 20, 4
  train = {"x": np.arange(n, dtype=np.int32)[:, None] * np.ones((1, 3), np.int32),
           "label": np.arange(n, dtype=np.int32)}
  source = in_memory.ArraySource(train, {}, {}, seed=7)
  source.bind(DataParallel())
  assert source.steps_per_epoch(local_batch) == 5
  chunk = jax.device_get(source.batches(1, 3, local_batch))
  chex.assert_shape([chunk["x"], chunk["label"]], [(3, local_batch, 3), (3, local_batch)])
  perm = np.asarray(in_memory.epoch_permutation(stream_key(7, DATA_STREAM), 0, n))
  np.testing.assert_array_equal(chunk["label"].reshape(-1), perm[4:16])
  np.testing.assert_array_equal(chunk["x"][..., 0], chunk["label"])
  # A pure function of the step: the same chunk again, and the next epoch reshuffled.
  np.testing.assert_array_equal(jax.device_get(source.batches(1, 3, local_batch))["label"],
                                chunk["label"])
  epoch1 = np.asarray(in_memory.epoch_permutation(stream_key(7, DATA_STREAM), 1, n))
  np.testing.assert_array_equal(
      jax.device_get(source.batches(5, 5, local_batch))["label"].reshape(-1), epoch1)
  with pytest.raises(ValueError, match="epoch boundary"):
    source.batches(3, 3, local_batch)


def test_load_classification_from_mock_tfds(mock_tfds, tmp_path):
  cfg = base_config().data
  cfg.name, cfg.validation_size = "cifar10", 10
  data = in_memory.load_classification(cfg)
  chex.assert_shape(data.train["image"], (54, 32, 32, 3))
  chex.assert_shape(data.validation["image"], (10, 32, 32, 3))
  assert data.train["image"].dtype == np.uint8 and data.train["label"].dtype == np.int32
  assert data.num_classes == 10 and len(data.class_names) == 10
  chex.assert_shape([data.mean, data.std], (3,))
  assert not (tmp_path / "cache").exists()   # TFDS's mock examples are never cached


def test_missing_data_offline_fails_fast_with_both_remedies(tmp_path, monkeypatch):
  monkeypatch.setattr(tfds_source, "_hosts_reachable", lambda urls: False)
  start = time.monotonic()
  with pytest.raises(UserError) as err:
    tfds_source.prepare("mnist", str(tmp_path / "tfds"))
  assert time.monotonic() - start < 30
  message = str(err.value)
  assert "python -m practice_jax.data.prepare mnist --manual_dir=" in message
  assert "--config.data.manual_dir" in message and "\n" not in message


def test_unreachable_host_is_detected(monkeypatch):
  monkeypatch.setattr(tfds_source, "PROBE_TIMEOUT_S", 1.0)
  assert not tfds_source._hosts_reachable(["https://does-not-exist.invalid/x.gz"])


def test_manual_dir_must_exist(tmp_path):
  with pytest.raises(UserError, match="does not exist"):
    tfds_source.prepare("mnist", str(tmp_path / "tfds"), str(tmp_path / "nowhere"))


@pytest.mark.real_data
def test_corrupt_manual_file_is_refused(tmp_path, mnist_files):
  manual = tmp_path / "manual"
  manual.mkdir()
  for f in mnist_files.glob("*.gz"):
    (manual / f.name).write_bytes(f.read_bytes())
  target = manual / "t10k-labels-idx1-ubyte.gz"
  target.write_bytes(target.read_bytes()[:-10] + b"0123456789")
  with pytest.raises(UserError, match="checksum"):
    tfds_source.prepare("mnist", str(tmp_path / "tfds"), str(manual))


@pytest.mark.real_data
def test_real_mnist_splits(real_mnist_data_dir):
  cfg = base_config().data
  cfg.data_dir = real_mnist_data_dir
  data = in_memory.load_classification(cfg)
  assert len(data.train["label"]) == 55000 and len(data.validation["label"]) == 5000
  assert len(data.test["label"]) == 10000
  assert data.mean[0] == pytest.approx(0.1307, abs=2e-3)
  assert data.std[0] == pytest.approx(0.3081, abs=2e-3)


@pytest.mark.real_data
def test_mnist_and_fashion_mnist_prepared_in_one_data_dir_stay_distinct(tmp_path):
  from conftest import SHARED_DATA
  if not (SHARED_DATA / "fashion_mnist" / "train-images-idx3-ubyte.gz").is_file():
    pytest.skip("real Fashion-MNIST files not found")
  data_dir = str(tmp_path / "tfds")
  tfds_source.prepare("mnist", data_dir, str(SHARED_DATA / "mnist"))
  cfg = base_config().data
  cfg.name, cfg.data_dir, cfg.manual_dir = "fashion_mnist", data_dir, str(SHARED_DATA / "fashion_mnist")
  fashion = in_memory.load_classification(cfg)
  assert fashion.mean[0] == pytest.approx(0.2860, abs=3e-3)   # MNIST's would be 0.1307
  assert fashion.class_names[0] == "T-shirt/top"


@pytest.mark.real_data
def test_a_damaged_prepared_dataset_is_one_sentence(tmp_path, mnist_files):
  data_dir = tmp_path / "tfds"
  builder = tfds_source.prepare("mnist", str(data_dir), str(mnist_files))
  shard = next(data_dir.glob("mnist/*/mnist-train.tfrecord-*"))
  shard.write_bytes(shard.read_bytes()[:shard.stat().st_size // 2])   # half a shard
  cfg = base_config().data
  cfg.data_dir = str(data_dir)
  with pytest.raises(UserError, match=r"The prepared mnist dataset in .* is damaged .*; "
                                      r"delete that folder and prepare it again"):
    in_memory.load_classification(cfg)
  del builder


# -- the decoded-array cache (tfds_source.load_image_splits) -----------------------------

TINY = "pjax_tiny_digits"


@pytest.fixture(scope="module")
def tiny_builder():
  """A TFDS image dataset of random 28x28 digits (30 train, 12 test), registered once per
  process; its `seed` decides the images."""
  import tensorflow_datasets as tfds

  class PjaxTinyDigits(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")
    seed = 0

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=(28, 28, 1)),
          "label": tfds.features.ClassLabel(num_classes=10)}))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples(30, 0), "test": self._generate_examples(12, 1)}

    def _generate_examples(self, n, split_seed):
      rng = np.random.default_rng([type(self).seed, split_seed])
      for i in range(n):
        yield i, {"image": rng.integers(0, 256, (28, 28, 1), dtype=np.uint8),
                  "label": int(rng.integers(10))}

  return PjaxTinyDigits


@pytest.fixture
def tiny_dataset(tiny_builder, tmp_path, monkeypatch):
  """config.data of the tiny dataset prepared by TFDS in tmp_path/tfds (real files, as
  `prepare` leaves them); the array cache in tmp_path/cache."""
  monkeypatch.setitem(catalogue.CATALOGUE, TINY, catalogue.DatasetSpec(
      TINY, "image", image_shape=(28, 28, 1), num_classes=10))
  monkeypatch.setattr(tiny_builder, "seed", 0)
  tfds_source.prepare(TINY, str(tmp_path / "tfds"))
  cfg = base_config().data
  cfg.name, cfg.data_dir, cfg.validation_size = TINY, str(tmp_path / "tfds"), 6
  return cfg


def as_arrays(data) -> dict[str, np.ndarray]:
  arrays = {f"{name}_{k}": v for name, split in
            (("train", data.train), ("validation", data.validation), ("test", data.test))
            for k, v in split.items()}
  return {**arrays, "mean": data.mean, "std": data.std}


def assert_bitwise_equal(a: dict, b: dict) -> None:
  assert sorted(a) == sorted(b)
  for k in a:
    assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
    assert np.asarray(a[k]).tobytes() == np.asarray(b[k]).tobytes(), k


def through_tfds(cfg, monkeypatch):
  """The dataset read through TFDS alone, the cache off (as before the cache existed)."""
  with monkeypatch.context() as m:
    m.setenv("PRACTICE_JAX_DATA_CACHE", "0")
    return as_arrays(in_memory.load_classification(cfg))


LOAD_IN_A_FRESH_PROCESS = textwrap.dedent("""
    import sys
    import numpy as np
    from practice_jax.config_base import base_config
    from practice_jax.data import catalogue, in_memory
    name, data_dir, out = sys.argv[1:]
    catalogue.CATALOGUE[name] = catalogue.DatasetSpec(name, "image", image_shape=(28, 28, 1),
                                                      num_classes=10)
    cfg = base_config().data
    cfg.name, cfg.data_dir, cfg.validation_size = name, data_dir, 6
    data = in_memory.load_classification(cfg)
    splits = {"train": data.train, "validation": data.validation, "test": data.test}
    np.savez(out, mean=data.mean, std=data.std,
             **{f"{s}_{k}": v for s, split in splits.items() for k, v in split.items()})
    print(data.class_names)
    print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_datasets")))
    """)


def test_a_second_run_reads_the_cached_arrays_without_tensorflow(tiny_dataset, tmp_path,
                                                                  monkeypatch):
  reference = through_tfds(tiny_dataset, monkeypatch)
  assert not (tmp_path / "cache").exists()
  first = in_memory.load_classification(tiny_dataset)     # decodes, then caches
  assert_bitwise_equal(as_arrays(first), reference)
  assert len(list((tmp_path / "cache" / TINY).glob("*/image.npy"))) == 2   # train, test
  script = tmp_path / "load.py"
  script.write_text(LOAD_IN_A_FRESH_PROCESS)
  out = tmp_path / "second.npz"
  result = subprocess.run([sys.executable, str(script), TINY, tiny_dataset.data_dir, str(out)],
                          env={**os.environ, "PRACTICE_JAX_DATA_CACHE": str(tmp_path / "cache")},
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  names, modules = result.stdout.strip().splitlines()[-2:]
  assert modules == "[]"                                   # no TensorFlow, no TFDS
  assert names == str(first.class_names)
  with np.load(out) as second:
    assert_bitwise_equal(dict(second), reference)          # channel statistics included


def test_a_changed_dataset_is_decoded_again(tiny_dataset, tiny_builder, tmp_path, monkeypatch):
  old = as_arrays(in_memory.load_classification(tiny_dataset))
  # The dataset prepared again, with other images (as after a new download or version).
  import shutil
  shutil.rmtree(os.path.join(tiny_dataset.data_dir, TINY))
  monkeypatch.setattr(tiny_builder, "seed", 1)
  tfds_source.prepare(TINY, tiny_dataset.data_dir)
  new = as_arrays(in_memory.load_classification(tiny_dataset))
  assert not np.array_equal(new["train_image"], old["train_image"])
  assert_bitwise_equal(new, through_tfds(tiny_dataset, monkeypatch))
  # A file of the prepared copy changed in place (its time) is another fingerprint too.
  key = tfds_source.fingerprint(TINY, tiny_dataset.data_dir, "train")
  shard = next(p for p in (tmp_path / "tfds").rglob("*train.tfrecord*"))
  os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
  assert tfds_source.fingerprint(TINY, tiny_dataset.data_dir, "train") != key


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
def test_a_damaged_cache_file_is_rebuilt_with_a_warning(tiny_dataset, tmp_path, monkeypatch,
                                                         capsys, damage):
  reference = as_arrays(in_memory.load_classification(tiny_dataset))
  images = next((tmp_path / "cache" / TINY).glob("train-*/image.npy"))
  data = bytearray(images.read_bytes())
  if damage == "flipped byte":
    data[-5] ^= 0xFF
  else:
    data = data[:len(data) // 2]
  written = images.stat().st_mtime_ns
  images.write_bytes(bytes(data))
  # A write moves the modification time (which sends the file to its checksum); within one
  # tick of the kernel's coarse clock it may not, so move it as a later write would.
  os.utime(images, ns=(written, written + 10**9))
  capsys.readouterr()
  again = as_arrays(in_memory.load_classification(tiny_dataset))
  err = capsys.readouterr().err
  assert f"warning: the cached arrays in {images.parent} are damaged" in err
  assert err.count("\n") == 1
  assert_bitwise_equal(again, reference)
  as_arrays(in_memory.load_classification(tiny_dataset))   # rebuilt: read quietly now
  assert capsys.readouterr().err == ""


def test_a_touched_cache_file_is_checked_and_kept(tiny_dataset, tmp_path, capsys):
  reference = as_arrays(in_memory.load_classification(tiny_dataset))
  images = next((tmp_path / "cache" / TINY).glob("train-*/image.npy"))
  st = images.stat()
  os.utime(images, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))   # copied, or touched
  capsys.readouterr()
  assert_bitwise_equal(as_arrays(in_memory.load_classification(tiny_dataset)), reference)
  assert capsys.readouterr().err == ""          # its checksum matched: kept, no warning


TINY_TEXT = "pjax_tiny_text"
TEXTS = {"train": "First Citizen:\nBefore we proceed, hear me speak.\n",
         "validation": "All:\nSpeak, speak. ¿Qué?\n", "test": "Resolved. résolu.\n"}

LOAD_TEXT_IN_A_FRESH_PROCESS = textwrap.dedent("""
    import json, sys
    from practice_jax.data import catalogue, tfds_source
    name, data_dir = sys.argv[1:]
    catalogue.CATALOGUE[name] = catalogue.DatasetSpec(name, "text", validation_split="validation")
    texts = tfds_source.load_text_splits(name, data_dir, None)
    print(json.dumps(texts))
    print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_datasets")))
    """)


def test_a_text_dataset_is_cached_and_read_again_without_tensorflow(tmp_path, monkeypatch):
  import tensorflow_datasets as tfds

  class PjaxTinyText(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self,
                                   features=tfds.features.FeaturesDict({"text": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
      return {split: self._generate_examples(text) for split, text in TEXTS.items()}

    def _generate_examples(self, text):
      for i, line in enumerate(text.splitlines(keepends=True)):   # several examples, joined
        yield i, {"text": line}

  monkeypatch.setitem(catalogue.CATALOGUE, TINY_TEXT, catalogue.DatasetSpec(
      TINY_TEXT, "text", validation_split="validation"))
  data_dir = str(tmp_path / "tfds")
  tfds_source.prepare(TINY_TEXT, data_dir)
  assert tfds_source.load_text_splits(TINY_TEXT, data_dir, None) == TEXTS
  assert len(list((tmp_path / "cache" / TINY_TEXT).glob("*/text.npy"))) == 3
  script = tmp_path / "load.py"
  script.write_text(LOAD_TEXT_IN_A_FRESH_PROCESS)
  result = subprocess.run([sys.executable, str(script), TINY_TEXT, data_dir],
                          env={**os.environ, "PRACTICE_JAX_DATA_CACHE": str(tmp_path / "cache")},
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  texts, modules = result.stdout.strip().splitlines()[-2:]
  assert modules == "[]"                                   # no TensorFlow, no TFDS
  assert json.loads(texts) == TEXTS          # every character, UTF-8 intact
