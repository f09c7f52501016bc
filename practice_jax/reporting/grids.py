"""PNG grids of images (generated samples, reconstructions, latent interpolations): the
pictures that say at a glance what a generative model has learned.

Images arrive as arrays in [0, 1], [n, height, width, channels]; each is drawn pixel for
pixel (nearest neighbour), a thin gap between them, rows optionally labelled (the class a
conditional generator was asked for, 'original' / 'reconstruction').
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

GAP = 1          # pixels between tiles
INCHES_PER_TILE = 0.6
MIN_WIDTH = 4.5      # inches: room for the title


def tile(images: np.ndarray, columns: int, gap: int = GAP) -> np.ndarray:
  """[n, h, w, c] images -> one [rows*(h+gap)-gap, columns*(w+gap)-gap, c] array, row
  by row; empty places (n not a multiple of `columns`) and gaps are white."""
  images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
  n, h, w, c = images.shape
  rows = -(-n // columns)
  out = np.ones((rows * (h + gap) - gap, columns * (w + gap) - gap, c), np.float32)
  for i, image in enumerate(images):
    r, k = divmod(i, columns)
    out[r * (h + gap):r * (h + gap) + h, k * (w + gap):k * (w + gap) + w] = image
  return out


def image_grid(images: np.ndarray, path: str, columns: int, title: str = "",
               row_labels: Sequence[str] | None = None,
               column_labels: Sequence[str] | None = None) -> None:
  """Writes `images` as a grid of `columns` per row to the PNG at `path`."""
  images = np.asarray(images)
  n, h, w, c = images.shape
  rows = -(-n // columns)
  grid = tile(images, columns)
  margin_left = 1.2 if row_labels else 0.2
  fig = plt.figure(figsize=(max(columns * INCHES_PER_TILE + margin_left, MIN_WIDTH),
                            rows * INCHES_PER_TILE + (0.6 if title else 0.2)
                            + (0.3 if column_labels else 0.0)))
  ax = fig.add_subplot()
  if c == 1:
    ax.imshow(grid[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
  else:
    ax.imshow(grid, interpolation="nearest")
  ax.set_xticks([k * (w + GAP) + w / 2 for k in range(columns)] if column_labels else [],
                list(column_labels or []), fontsize=7)
  ax.set_yticks([r * (h + GAP) + h / 2 for r in range(rows)] if row_labels else [],
                list(row_labels or []), fontsize=8)
  ax.tick_params(length=0)
  if column_labels:
    ax.xaxis.tick_top()
  for spine in ax.spines.values():
    spine.set_visible(False)
  if title:
    ax.set_title(title, fontsize=9, wrap=True)
  fig.tight_layout(pad=0.3)
  fig.savefig(path, dpi=100)
  plt.close(fig)
