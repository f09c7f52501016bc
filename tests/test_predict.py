"""predict's image preparation on synthetic pictures: inversion, MNIST-style framing,
colour crops, and the refusals (no model needed; the command line is in test_quiet.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from practice_jax import predict
from practice_jax.data.images import read_image
from practice_jax.errors import UserError

MNIST = (28, 28, 1)


def drawn_seven(width=120, height=160, ink=0, paper=255) -> np.ndarray:
  """A '7' drawn with a thick pen, as from a drawing program: HW1 uint8."""
  image = Image.new("L", (width, height), paper)
  ImageDraw.Draw(image).line([(20, 20), (100, 20), (50, 140)], fill=ink, width=9)
  return np.asarray(image)[..., None]


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
  x = image[..., 0].astype(np.float64)
  ys, xs = np.indices(x.shape)
  return (ys * x).sum() / x.sum(), (xs * x).sum() / x.sum()


def ink_box(image: np.ndarray) -> tuple[int, int]:
  ink = image[..., 0] > 0.1 * 255
  rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
  return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def test_dark_ink_on_paper_is_inverted_by_default_and_on_request_only():
  dark_on_light = drawn_seven()
  assert predict.is_dark_on_light(dark_on_light)
  assert not predict.is_dark_on_light(255 - dark_on_light)
  framed, notes = predict.to_model_input(dark_on_light, MNIST, "auto", resize=True)
  assert notes == ["inverted: dark on light", "framed as mnist from 120x160"]
  assert framed[0, 0, 0] == 0 and framed.max() == 255          # white digit on black
  _, notes = predict.to_model_input(255 - dark_on_light, MNIST, "auto", resize=True)
  assert notes == ["framed as mnist from 120x160"]
  mnist_like = np.zeros(MNIST, np.uint8)
  mnist_like[8:20, 12:16] = 255
  same, notes = predict.to_model_input(mnist_like, MNIST, "no")
  assert notes == [] and np.array_equal(same, mnist_like)
  flipped, notes = predict.to_model_input(mnist_like, MNIST, "yes")
  assert notes == ["inverted"] and np.array_equal(flipped, 255 - mnist_like)


def test_resize_frames_the_digit_as_mnist_was_made():
  framed, _ = predict.to_model_input(drawn_seven(), MNIST, "auto", resize=True)
  assert framed.shape == MNIST and framed.dtype == np.uint8
  height, width = ink_box(framed)
  assert height == 20 and 12 <= width <= 16      # longest side 20, aspect ratio (~0.6) kept
  cy, cx = centre_of_mass(framed)
  assert abs(cy - 13.5) <= 0.5 and abs(cx - 13.5) <= 0.5


def test_framing_an_mnist_style_digit_again_changes_little():
  once = predict.frame(255 - drawn_seven())
  twice = predict.frame(once)
  assert np.abs(once.astype(int) - twice.astype(int)).mean() < 8   # of 255


def test_an_off_centre_wide_digit_is_centred_and_fitted_by_its_longer_side():
  image = np.zeros((100, 300), np.uint8)
  image[70:80, 200:290] = 200           # a dim horizontal bar near a corner
  framed = predict.frame(image)
  height, width = ink_box(framed)
  assert width == 20 and height <= 4
  cy, cx = centre_of_mass(framed)
  assert abs(cy - 13.5) <= 0.5 and abs(cx - 13.5) <= 0.5
  assert framed.max() == 255            # the brightest stroke is 255, as in MNIST


def test_fashion_mnist_items_fill_the_field_centred():
  framed, notes = predict.to_model_input(drawn_seven(), MNIST, "auto", resize=True,
                                         dataset="fashion_mnist")
  assert notes[-1] == "framed as fashion_mnist from 120x160"
  height, width = ink_box(framed)
  assert height == 28 and width < 28


def test_a_blank_image_stays_blank():
  blank = np.full((50, 50, 1), 255, np.uint8)
  framed, _ = predict.to_model_input(blank, MNIST, "auto", resize=True)
  assert framed.shape == MNIST and framed.max() == 0


def test_another_size_is_refused_without_resize():
  with pytest.raises(UserError, match=r"photo.png is 120x160 pixels but the model takes "
                                      r"28x28; pass --resize to fit it\."):
    predict.to_model_input(drawn_seven(), MNIST, "auto", name="photo.png")


def test_colour_images_are_cropped_around_the_centre_and_never_inverted_unasked():
  image = np.zeros((40, 80, 3), np.uint8)
  image[:, :20] = (255, 0, 0)           # red strip on the left: outside the centre crop
  image[:, 20:60] = (0, 0, 255)         # blue centre
  image[:, 60:] = (255, 255, 255)       # white strip on the right: outside too
  fitted, notes = predict.to_model_input(image, (32, 32, 3), "auto", resize=True)
  assert notes == ["resized from 80x40"] and fitted.shape == (32, 32, 3)
  assert fitted[..., 2].mean() > 240 and fitted[..., 0].mean() < 15
  tall, _ = predict.to_model_input(image.transpose(1, 0, 2), (32, 32, 3), "no", resize=True)
  assert tall.shape == (32, 32, 3) and tall[..., 2].mean() > 240


def test_read_image_converts_and_puts_transparent_pixels_on_white_paper(tmp_path):
  image = Image.new("RGBA", (40, 30), (0, 0, 0, 0))      # transparent black, as drawn
  ImageDraw.Draw(image).line([(5, 15), (35, 15)], fill=(0, 0, 0, 255), width=3)
  image.save(tmp_path / "drawn.png")
  grey = read_image(str(tmp_path / "drawn.png"), 1)
  assert grey.shape == (30, 40, 1) and grey[0, 0, 0] == 255 and grey[15, 20, 0] == 0
  assert read_image(str(tmp_path / "drawn.png"), 3).shape == (30, 40, 3)


def test_unreadable_files_are_named(tmp_path):
  with pytest.raises(UserError, match="missing.png does not exist"):
    read_image(str(tmp_path / "missing.png"), 1)
  (tmp_path / "junk.png").write_text("not an image")
  with pytest.raises(UserError, match="junk.png is not a readable image"):
    read_image(str(tmp_path / "junk.png"), 1)


def test_a_missing_input_is_said_before_jax_or_the_run_loads(tmp_path):
  """A wrong path is one sentence from the command line, before JAX is imported (it used
  to take the whole start-up, seconds, to say so); so is a workdir without a run."""
  import subprocess
  import sys

  from conftest import REPO
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text("{}")
  for args, said in [([f"--workdir={workdir}", str(tmp_path / "missing.png")],
                      f"error: {tmp_path / 'missing.png'} does not exist."),
                     ([f"--workdir={tmp_path / 'nowhere'}", str(tmp_path / "missing.png")],
                      f"error: {tmp_path / 'missing.png'} does not exist."),
                     ([f"--workdir={tmp_path}", __file__],
                      f"error: {tmp_path} holds no practice_jax run (no config.json)")]:
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "practice_jax.predict",
                             *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    lines = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith(said), lines
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert not imported & {"jax", "orbax.checkpoint", "tensorflow", "practice_jax.train"}
