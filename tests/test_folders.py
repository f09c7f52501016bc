"""Your own image folders: layouts, the seeded split, the decoded-image cache, refusals
(one sentence, exit status 2, nothing written), training and predict on the result."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import ml_collections
import pytest
from PIL import Image

from conftest import REPO, load_config
from practice_jax import data, models, train
from practice_jax.data import folders
from practice_jax.errors import UserError
from practice_jax.validation import validate

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def draw(path, colour, size=(12, 10), mode="RGB", seed=0):
  rng = np.random.default_rng(seed)
  pixels = np.clip(np.asarray(colour) + rng.normal(0, 20, size[::-1] + (3,)), 0, 255)
  image = Image.fromarray(pixels.astype(np.uint8))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image.convert(mode).save(path)


def colour_folder(root, per_class=12, split=None):
  """Class folders of noisy colour patches of mixed sizes and modes (JPEG and PNG)."""
  for c, (name, colour) in enumerate(COLOURS.items()):
    for i in range(per_class):
      folder = os.path.join(root, *([split] if split else []), name)
      ext = "jpg" if i % 3 == 0 else "png"
      size = (12, 10) if i % 2 else (20, 24)
      draw(os.path.join(folder, f"{i:03d}.{ext}"), colour, size, seed=100 * c + i)
  return str(root)


def folder_config(path, tmp_path, **data_settings):
  config = load_config("image_folder")
  config.data.update(dict(path=str(path), image_size=16, cache_dir=str(tmp_path / "cache"),
                          **data_settings))
  config.model = models_config()
  config.num_epochs = 4.0
  config.batch_size = 8
  config.eval_batch_size = 16
  config.log_every_steps = 4
  config.steps_per_dispatch = 1
  config.schedule.warmup_epochs = 0.0
  config.optimizer.learning_rate = 3e-3
  return config


def models_config():
  from practice_jax.config_base import model_config
  return model_config("cnn", features=(8,), pools=("avg",), dense=(16,))


def test_layout_split_and_cache(tmp_path):
  root = colour_folder(tmp_path / "colours")
  (tmp_path / "colours" / ".DS_Store").write_text("hidden files are not images")
  cfg = data.data_config("image_folder", path=root, image_size=16,
                         cache_dir=str(tmp_path / "cache"))
  names, parts, cached = folders.load(cfg)
  assert names == ["blue", "green", "red"] and not cached
  assert parts["train"]["image"].shape == (36, 16, 16, 3)
  assert folders.load(cfg)[2]                      # the second load reads the cache
  names, parts = folders.read_splits(cfg)
  sizes = {k: len(v["label"]) for k, v in parts.items()}
  assert sizes == {"train": 30, "validation": 3, "test": 3}    # 10% of 12 per class: 1
  assert sorted(parts["test"]["label"].tolist()) == [0, 1, 2]   # stratified
  # Any changed byte makes a new cache entry.
  draw(os.path.join(root, "red", "000.jpg"), (0, 0, 0), seed=7)
  assert not folders.load(cfg)[2]


def test_padding_keeps_the_whole_image_and_has_its_own_cache(tmp_path):
  """config.data.fit='pad': a 20x10 (wide) image is scaled whole to 16x8 and centred on
  black rows; 'crop' fills the frame. The two are cached apart."""
  from practice_jax.data.images import fit_image
  wide = np.full((10, 20, 3), 200, np.uint8)
  padded = fit_image(wide, 16, 16, "pad")
  assert padded.shape == (16, 16, 3)
  assert (padded[:4] == 0).all() and (padded[12:] == 0).all()
  assert (np.abs(padded[4:12].astype(int) - 200) <= 1).all()
  assert (np.abs(fit_image(wide, 16, 16, "crop").astype(int) - 200) <= 1).all()
  root = tmp_path / "wide"
  for name, colour in COLOURS.items():
    for i in range(4):
      draw(os.path.join(root, name, f"{i}.png"), colour, size=(20, 10), seed=i)
  settings = dict(path=str(root), image_size=16, cache_dir=str(tmp_path / "cache"))
  crop = folders.load(data.data_config("image_folder", **settings))[1]
  pad = folders.load(data.data_config("image_folder", fit="pad", **settings))
  assert not pad[2]                                  # not the crop's cache entry
  images = np.concatenate([part["image"] for part in pad[1].values()])
  assert (images[:, :4] == 0).all() and (images[:, 4:12] > 0).any()
  assert (np.concatenate([p["image"] for p in crop.values()])[:, :4] > 0).any()
  with pytest.raises(UserError, match="config.data.fit='stretch' must be one of crop, pad"):
    validate(folder_config(root, tmp_path, fit="stretch"), 1)


def test_given_split_folders_are_used(tmp_path):
  root = colour_folder(tmp_path / "f", per_class=6, split="train")
  colour_folder(tmp_path / "f", per_class=2, split="test")
  cfg = data.data_config("image_folder", path=root, image_size=8, channels=1,
                         cache_dir=str(tmp_path / "cache"), validation_fraction=0.5)
  names, parts = folders.read_splits(cfg)
  assert {k: len(v["label"]) for k, v in parts.items()} == {
      "train": 9, "validation": 9, "test": 6}
  assert parts["test"]["image"].shape[1:] == (8, 8, 1)


@pytest.mark.parametrize("make,expected", [
    (lambda r: (r / "a").mkdir(parents=True), "has only one class folder (a)"),
    (lambda r: r.mkdir(), "has no class sub-folders"),
    (lambda r: [(r / "a").mkdir(parents=True), (r / "b").mkdir()], "class folder"),
    (lambda r: [colour_folder(r, 1), (r / "red" / "notes.txt").write_text("hi")],
     "notes.txt is not a readable image"),
])
def test_bad_folders_are_refused_in_one_sentence(tmp_path, make, expected):
  root = tmp_path / "images"
  make(root)
  cfg = data.data_config("image_folder", path=str(root), cache_dir=str(tmp_path / "cache"))
  with pytest.raises(UserError) as e:
    folders.read_splits(cfg)
  assert expected in str(e.value)
  assert not (tmp_path / "cache").exists()


def test_bad_folder_at_the_command_line_writes_nothing(tmp_path):
  root = colour_folder(tmp_path / "images", per_class=1)
  (tmp_path / "images" / "blue" / "broken.png").write_bytes(b"not a png")
  workdir = tmp_path / "run"
  result = subprocess.run(
      [sys.executable, "-m", "practice_jax.main", "--compilation_cache=",
       f"--config=configs/image_folder.py:{root}", f"--workdir={workdir}",
       f"--config.data.cache_dir={tmp_path / 'cache'}"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "broken.png is not a readable image" in last
  assert not workdir.exists() and not (tmp_path / "cache").exists()


def test_train_on_a_folder_and_predict_new_images(tmp_path):
  root = colour_folder(tmp_path / "colours")
  config = folder_config(root, tmp_path)
  validate(config, 1)
  workdir = str(tmp_path / "run")
  record = train.train_and_evaluate(config, workdir)
  assert record["final"]["test"]["accuracy"] == 1.0
  exp, _, _, _ = train.load_trained(workdir)
  assert exp.task.class_names == ["blue", "green", "red"]
  draw(str(tmp_path / "new" / "big_green.png"), COLOURS["green"], size=(50, 40), seed=9)
  result = subprocess.run(
      [sys.executable, "-m", "practice_jax.predict", f"--workdir={workdir}",
       str(tmp_path / "new" / "big_green.png")],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert "[resized from 50x40]: green" in result.stdout


STREAMED_CONFIG = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_folders import folder_config


def get_config():
  config = folder_config({root!r}, Path({tmp!r}), in_memory=False)
  config.num_epochs = 2.0
  config.checkpoint_every_steps = 1
  config.keep_checkpoints = 20
  config.plots = False
  return config
"""


def test_a_folder_streams_from_its_cache_and_resumes_exactly_after_sigkill(tmp_path):
  """A real SIGKILL mid-epoch of a run streamed through grain from the folder's cache:
  the same command run again resumes from its last checkpoint and ends bitwise where an
  uninterrupted run ends (state, final metrics, the metrics history)."""
  import importlib.util
  import signal
  import time

  import chex
  from conftest import checkpointed_state
  from practice_jax.data.streaming import StreamingSource
  from practice_jax.reporting import writers
  root = colour_folder(tmp_path / "colours")
  config_file = tmp_path / "streamed.py"
  config_file.write_text(STREAMED_CONFIG.format(tests=str(REPO / "tests"), root=root,
                                                tmp=str(tmp_path)))
  spec = importlib.util.spec_from_file_location("streamed_config", config_file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  assert isinstance(train.build(config).source, StreamingSource)
  full = train.train_and_evaluate(config, str(tmp_path / "full"))
  per_epoch = full["steps_per_epoch"]

  killed = tmp_path / "killed"
  command = [sys.executable, "-m", "practice_jax.main", f"--config={config_file}",
             f"--workdir={killed}", "--compilation_cache="]
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 300

  def saved():
    folder = killed / "checkpoints"
    return [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
  while not saved() and proc.poll() is None:
    assert time.monotonic() < deadline, "no checkpoint was written"
    time.sleep(0.005)
  proc.send_signal(signal.SIGKILL)
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == -signal.SIGKILL, err[-3000:]
  assert not (killed / "run.json").exists()
  rerun = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  resumed = int(rerun.stdout.split("Resuming from the checkpoint at step ")[1].split()[0])
  assert 0 < resumed < full["steps"]
  if resumed % per_epoch == 0:   # killed exactly at an epoch end: say so, still exact
    print(f"killed at the epoch boundary (step {resumed})")
  second = json.loads((killed / "run.json").read_text())
  assert second["final"] == full["final"]
  chex.assert_trees_all_equal(checkpointed_state(config, tmp_path / "full"),
                              checkpointed_state(config, killed))
  strip = lambda w: [{k: v for k, v in r.items() if k != "time"}
                     for r in writers.read_metrics(str(w))]
  assert strip(killed) == strip(tmp_path / "full")


def test_resnet_imagenet_stem():
  model = models.build("resnet", 5, stage_sizes=(1,), width=8, stem="imagenet")
  x = jnp.zeros((1, 64, 64, 3))
  variables = model.init(jax.random.PRNGKey(0), x)
  assert model.apply(variables, x).shape == (1, 5)
  assert variables["params"]["Conv_0"]["kernel"].shape == (7, 7, 3, 8)
  problem = models.check(ml_collections.ConfigDict({"name": "resnet", "stem": "vgg"}))
  assert "must be one of cifar, imagenet" in problem
