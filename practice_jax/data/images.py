"""Reading image files and bringing them to a model's size: shared by image folders
(data/folders.py) and ``predict``. Pillow only (no TensorFlow), so ``predict`` starts fast."""

from __future__ import annotations

import numpy as np

from practice_jax.errors import UserError


def read_image(path: str, channels: int) -> np.ndarray:
  """The image at `path` as uint8 HWC with `channels` channels (transparent pixels become
  white, like paper), or a UserError naming the file."""
  from PIL import Image, UnidentifiedImageError
  try:
    with Image.open(path) as image:
      if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")
        paper = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(paper, image)
      array = np.asarray(image.convert("L" if channels == 1 else "RGB"), np.uint8)
  except FileNotFoundError:
    raise UserError(f"{path} does not exist.") from None
  except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as e:
    raise UserError(f"{path} is not a readable image ({e}).") from None
  return array.reshape(array.shape[:2] + (channels,))


def fit_colour(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Centre crop to the target's aspect ratio, then scaled: a photograph filling the frame."""
  from PIL import Image
  h, w = image.shape[:2]
  if h * width > w * height:                      # too tall
    keep = round(w * height / width)
    image = image[(h - keep) // 2:(h - keep) // 2 + keep]
  else:
    keep = round(h * width / height)
    image = image[:, (w - keep) // 2:(w - keep) // 2 + keep]
  resized = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).resize(
      (width, height), Image.Resampling.LANCZOS)
  return np.asarray(resized, np.uint8).reshape(height, width, image.shape[-1])


FITS = ("crop", "pad")


def fit_image(image: np.ndarray, height: int, width: int, fit: str = "crop") -> np.ndarray:
  """`image` brought to height x width: 'crop' (fit_colour: centre crop to the aspect
  ratio, then scaled) or 'pad' (scaled whole to fit inside, keeping its aspect ratio,
  centred on black, as a letterbox: nothing of the image is lost)."""
  if fit == "crop":
    return fit_colour(image, height, width)
  from PIL import Image
  h, w = image.shape[:2]
  scale = min(height / h, width / w)
  new_h, new_w = max(1, min(height, round(h * scale))), max(1, min(width, round(w * scale)))
  resized = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).resize(
      (new_w, new_h), Image.Resampling.LANCZOS)
  out = np.zeros((height, width, image.shape[-1]), np.uint8)
  top, left = (height - new_h) // 2, (width - new_w) // 2
  out[top:top + new_h, left:left + new_w] = np.asarray(resized, np.uint8).reshape(
      new_h, new_w, image.shape[-1])
  return out
