"""PNG pictures of what a trained model does inside (python -m practice_jax.inspect).

- errors.png: the test examples the model got most confidently wrong, each titled with
  its true and predicted class and the probability given to the wrong one.
- filters.png: the first convolution's kernels, one tile per output channel (grey
  images: blue negative, red positive, one symmetric scale for all; colour images: each
  kernel stretched to [0, 1] as RGB).
- feature_maps.png: one input and, per conv layer, the outputs of its most active
  channels (each tile on its own scale; brighter = stronger).
- saliency.png: per example, the image, the vanilla gradient of the predicted class's
  logit with respect to the pixels, and SmoothGrad (the gradient averaged over noisy
  copies), as heatmaps of the gradient's magnitude (max over colour channels).
- attention.png: a GPT's attention weights for a prompt, one heatmap per layer and head
  (rows: the position attending, columns: the positions it attends to).
"""

from __future__ import annotations

import math

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _show(ax, image: np.ndarray, **kw) -> None:
  """A uint8/float HWC image (1 or 3 channels) without ticks."""
  image = np.asarray(image)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if image.ndim == 2:
    kw.setdefault("cmap", "gray")
  ax.imshow(image, interpolation="nearest", **kw)
  ax.set_xticks([])
  ax.set_yticks([])


def _grid(n: int, columns: int | None = None) -> tuple[int, int]:
  columns = columns or max(1, math.ceil(math.sqrt(n)))
  return math.ceil(n / columns), columns


def _save(fig, path: str, title: str) -> str:
  fig.suptitle(title, fontsize=11)
  fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def errors(images: np.ndarray, true: list[str], predicted: list[str],
           probabilities: np.ndarray, path: str, title: str) -> str:
  """A grid of misclassified `images`, titled 'true X / pred Y 97%'."""
  rows, columns = _grid(len(images))
  fig, axes = plt.subplots(rows, columns, figsize=(1.7 * columns, 1.95 * rows + 0.5),
                           squeeze=False)
  for ax in axes.ravel():
    ax.axis("off")
  for ax, image, t, p, q in zip(axes.ravel(), images, true, predicted, probabilities):
    ax.axis("on")
    _show(ax, image)
    ax.set_title(f"true {t}\npred {p} {q:.0%}", fontsize=8, color="tab:red")
  return _save(fig, path, title)


def filters(kernel: np.ndarray, path: str, title: str) -> str:
  """`kernel` [kh, kw, in, out]: one tile per output channel."""
  kh, kw, cin, cout = kernel.shape
  rows, columns = _grid(cout, min(cout, 8 if cout <= 32 else 16))
  fig, axes = plt.subplots(rows, columns, figsize=(1.1 * columns, 1.1 * rows + 0.6),
                           squeeze=False)
  limit = float(np.abs(kernel).max()) or 1.0
  image = None
  for i, ax in enumerate(axes.ravel()):
    ax.axis("off")
    if i >= cout:
      continue
    k = kernel[..., i]
    if cin == 3:
      lo, hi = k.min(), k.max()
      _show(ax, (k - lo) / (hi - lo if hi > lo else 1.0))
    else:
      image = ax.imshow(k.mean(-1), cmap="RdBu_r", vmin=-limit, vmax=limit,
                        interpolation="nearest")
    ax.set_title(str(i), fontsize=7)
  if image is not None:
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, pad=0.02)
    fig.suptitle(title, fontsize=11)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
  return _save(fig, path, title)


def feature_maps(image: np.ndarray, layers: list[tuple[str, np.ndarray]], path: str,
                 title: str, channels: int = 16) -> str:
  """`layers`: (name, activation [h, w, c]) per conv layer; the `channels` most active
  channels of each (by mean absolute value), the input first on every row."""
  fig, axes = plt.subplots(len(layers), channels + 1,
                           figsize=(1.15 * (channels + 1), 1.35 * len(layers) + 0.6),
                           squeeze=False)
  for row, (name, activation) in zip(axes, layers):
    for ax in row:
      ax.axis("off")
    row[0].axis("on")
    _show(row[0], image)
    row[0].set_ylabel(f"{name}\n{activation.shape[0]}x{activation.shape[1]}x"
                      f"{activation.shape[2]}", fontsize=7)
    strength = np.abs(activation).mean(axis=(0, 1))
    for ax, c in zip(row[1:], np.argsort(-strength)[:channels]):
      ax.imshow(activation[..., c], cmap="viridis", interpolation="nearest")
      ax.set_title(f"ch {c}", fontsize=6)
  return _save(fig, path, title)


def saliency(images: np.ndarray, vanilla: np.ndarray, smooth: np.ndarray,
             captions: list[str], path: str, title: str) -> str:
  """Per example: the image, |vanilla gradient| and |SmoothGrad| heatmaps, and the
  SmoothGrad map over the image."""
  n = len(images)
  fig, axes = plt.subplots(n, 4, figsize=(7.2, 1.9 * n + 0.6), squeeze=False)
  for row, image, v, s, caption in zip(axes, images, vanilla, smooth, captions):
    _show(row[0], image)
    row[0].set_ylabel(caption, fontsize=8)
    for ax, heat, name in ((row[1], v, "gradient"), (row[2], s, "SmoothGrad")):
      _show(ax, heat, cmap="inferno", vmin=0.0)
      ax.set_title(name, fontsize=8)
    grey = np.asarray(image, np.float32)
    grey = grey.mean(-1) if grey.ndim == 3 else grey
    _show(row[3], grey, alpha=1.0)
    row[3].imshow(s, cmap="inferno", alpha=0.55, interpolation="nearest")
    row[3].set_title("SmoothGrad on image", fontsize=8)
  return _save(fig, path, title)


def attention(weights: np.ndarray, tokens: list[str], path: str, title: str) -> str:
  """`weights` [layers, heads, t, t]; `tokens` the t characters, shown on the axes."""
  layers, heads, t, _ = weights.shape
  size = max(1.6, min(4.0, 0.12 * t + 1.0))
  fig, axes = plt.subplots(layers, heads, figsize=(size * heads, size * layers + 0.6),
                           squeeze=False)
  labels = [repr(c)[1:-1] if c.strip() else repr(c)[1:-1] or "␣" for c in tokens]
  labels = ["␣" if c == " " else lab for c, lab in zip(tokens, labels)]
  for layer in range(layers):
    for head in range(heads):
      ax = axes[layer, head]
      ax.imshow(weights[layer, head], cmap="viridis", vmin=0.0, vmax=1.0,
                interpolation="nearest")
      ax.set_title(f"layer {layer} head {head}", fontsize=8)
      # The characters on the outer axes only (drawing them on every panel is slow).
      fontsize = 7 if t <= 24 else 5
      if t <= 48 and layer == layers - 1:
        ax.set_xticks(range(t), labels, fontsize=fontsize)
      else:
        ax.set_xticks([])
      if t <= 48 and head == 0:
        ax.set_yticks(range(t), labels, fontsize=fontsize)
      else:
        ax.set_yticks([])
  return _save(fig, path, title)
