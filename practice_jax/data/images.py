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
