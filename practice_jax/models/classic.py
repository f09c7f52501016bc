"""The classic convolutional nets the textbooks walk through, sized for 28x28 and 32x32
inputs (Fashion-MNIST, MNIST, CIFAR), each with its paper's idea intact:

- ``VGG`` (Simonyan & Zisserman, 2015): stages of stacked 3x3 convolutions, each stage
  ending in a 2x2 max-pool, then dense layers with dropout.
- ``NiN``, Network in Network (Lin et al., 2014): "mlpconv" blocks (a kxk convolution
  followed by two 1x1 convolutions, i.e. a per-pixel MLP), max-pool and dropout between
  blocks, and no dense layer: the last block has one channel per class and global
  average pooling gives the logits.
- ``Inception`` (Szegedy et al., 2015), small: a stem convolution and Inception modules
  whose four branches (1x1; 1x1 -> 3x3; 1x1 -> 5x5 as two 3x3; 3x3 max-pool -> 1x1) are
  concatenated along the channels; a max-pool between the two groups of modules, global
  average pooling, one dense layer.
- ``AlexNet`` (Krizhevsky et al., 2012), scaled to small images: five convolutions (5x5,
  5x5, then three 3x3), max-pools after the first, second and fifth, two dense layers of
  `dense` units with dropout 0.5; batch norm in place of the (long abandoned) local
  response normalisation when ``batch_norm`` is on.

Each takes ``width``, a multiplier of its paper's channel counts (below 1 for CPUs), and
``conv_impl`` like the other convolutional models (models/conv.py).
"""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from practice_jax.models import conv
from practice_jax.models.layers import BatchNorm, Dropout
from practice_jax.models.settings import each, fraction, one_of, positive


def _positive_float(value) -> str | None:
  return None if value > 0 else "must be positive."


def _scaled(channels: int, width: float) -> int:
  return max(1, int(round(channels * width)))


class _ConvNet(nn.Module):
  """Shared: a conv (+ batch norm) + ReLU unit with the configured lowering."""

  def unit(self, x, features: int, kernel: int, train: bool, bn: bool):
    layer = conv.layer(conv.check_impl(self.conv_impl))
    x = layer(features, (kernel, kernel), padding="SAME", use_bias=not bn)(x)
    if bn:
      x = BatchNorm(use_running_average=not train, momentum=0.9)(x)
    return nn.relu(x)

  def pool(self, x):
    return conv.pool("max", x, conv.check_impl(self.conv_impl))


class VGG(_ConvNet):
  num_classes: int
  features: Sequence[int] = (64, 128, 256)      # channels of each stage
  depth: Sequence[int] = (2, 2, 2)              # 3x3 convolutions in each stage
  width: float = 0.5
  batch_norm: bool = True
  dense: Sequence[int] = (256,)
  dropout: float = 0.5
  conv_impl: str = "auto"

  SETTINGS = {"features": each(positive, min_len=1), "depth": each(positive, min_len=1),
              "width": _positive_float, "dense": each(positive), "dropout": fraction,
              "conv_impl": one_of(conv.CONV_IMPLS)}
  CPU_UNROLL = True

  @staticmethod
  def check_settings(settings: dict) -> str | None:
    if len(settings["features"]) != len(settings["depth"]):
      return (f"config.model.depth has {len(settings['depth'])} entries but features has "
              f"{len(settings['features'])}; give one depth per stage.")
    return None

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    for channels, n in zip(self.features, self.depth, strict=True):
      for _ in range(n):
        x = self.unit(x, _scaled(channels, self.width), 3, train, self.batch_norm)
      x = self.pool(x)
    x = x.reshape((x.shape[0], -1))
    for units in self.dense:
      x = Dropout(self.dropout, not train)(nn.relu(nn.Dense(units)(x)))
    return nn.Dense(self.num_classes)(x)


class NiN(_ConvNet):
  num_classes: int
  features: Sequence[int] = (96, 256, 384)      # channels of each mlpconv block
  kernels: Sequence[int] = (5, 5, 3)            # its first convolution's size
  width: float = 0.5
  batch_norm: bool = False
  dropout: float = 0.5
  conv_impl: str = "auto"

  SETTINGS = {"features": each(positive, min_len=1), "kernels": each(positive, min_len=1),
              "width": _positive_float, "dropout": fraction,
              "conv_impl": one_of(conv.CONV_IMPLS)}
  CPU_UNROLL = True

  @staticmethod
  def check_settings(settings: dict) -> str | None:
    if len(settings["features"]) != len(settings["kernels"]):
      return (f"config.model.kernels has {len(settings['kernels'])} entries but features "
              f"has {len(settings['features'])}; give one kernel size per block.")
    return None

  def mlpconv(self, x, channels: int, kernel: int, train: bool):
    x = self.unit(x, channels, kernel, train, self.batch_norm)
    x = self.unit(x, channels, 1, train, self.batch_norm)
    return self.unit(x, channels, 1, train, self.batch_norm)

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    for channels, kernel in zip(self.features, self.kernels, strict=True):
      x = self.mlpconv(x, _scaled(channels, self.width), kernel, train)
      x = Dropout(self.dropout, not train)(self.pool(x))
    # The last block: one channel per class, averaged over the image.
    x = self.unit(x, _scaled(self.features[-1], self.width), 3, train, self.batch_norm)
    x = self.unit(x, _scaled(self.features[-1], self.width), 1, train, self.batch_norm)
    layer = conv.layer(conv.check_impl(self.conv_impl))
    x = layer(self.num_classes, (1, 1))(x)
    return jnp.mean(x, axis=(1, 2))


class InceptionModule(_ConvNet):
  b1: int            # 1x1
  b3: tuple          # (1x1 reduce, 3x3)
  b5: tuple          # (1x1 reduce, 5x5 as two 3x3)
  pool_proj: int     # 3x3 max-pool -> 1x1
  batch_norm: bool
  conv_impl: str

  @nn.compact
  def __call__(self, x, train: bool):
    unit = lambda y, c, k: self.unit(y, c, k, train, self.batch_norm)  # noqa: E731
    one = unit(x, self.b1, 1)
    three = unit(unit(x, self.b3[0], 1), self.b3[1], 3)
    five = unit(unit(unit(x, self.b5[0], 1), self.b5[1], 3), self.b5[1], 3)
    pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding="SAME")
    return jnp.concatenate([one, three, five, unit(pooled, self.pool_proj, 1)], -1)


class Inception(_ConvNet):
  num_classes: int
  stem: int = 64
  width: float = 0.5
  batch_norm: bool = True
  dropout: float = 0.2
  conv_impl: str = "auto"

  SETTINGS = {"stem": positive, "width": _positive_float, "dropout": fraction,
              "conv_impl": one_of(conv.CONV_IMPLS)}
  CPU_UNROLL = True
  # (1x1, (reduce, 3x3), (reduce, 5x5), pool projection) of GoogLeNet's 3a, 3b | 4a, 4b.
  MODULES = (((64, (96, 128), (16, 32), 32), (128, (128, 192), (32, 96), 64)),
             ((192, (96, 208), (16, 48), 64), (160, (112, 224), (24, 64), 64)))

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    s = lambda c: _scaled(c, self.width)  # noqa: E731
    x = self.pool(self.unit(x, s(self.stem), 3, train, self.batch_norm))
    for group, modules in enumerate(self.MODULES):
      if group:
        x = self.pool(x)
      for b1, b3, b5, proj in modules:
        x = InceptionModule(s(b1), (s(b3[0]), s(b3[1])), (s(b5[0]), s(b5[1])), s(proj),
                            self.batch_norm, self.conv_impl)(x, train)
    x = Dropout(self.dropout, not train)(jnp.mean(x, axis=(1, 2)))
    return nn.Dense(self.num_classes)(x)


class AlexNet(_ConvNet):
  num_classes: int
  width: float = 0.5             # of (64, 192, 384, 256, 256) channels
  dense: int = 1024
  batch_norm: bool = True
  dropout: float = 0.5
  conv_impl: str = "auto"

  SETTINGS = {"width": _positive_float, "dense": positive, "dropout": fraction,
              "conv_impl": one_of(conv.CONV_IMPLS)}
  CPU_UNROLL = True

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    s = lambda c: _scaled(c, self.width)  # noqa: E731
    x = self.pool(self.unit(x, s(64), 5, train, self.batch_norm))
    x = self.pool(self.unit(x, s(192), 5, train, self.batch_norm))
    x = self.unit(x, s(384), 3, train, self.batch_norm)
    x = self.unit(x, s(256), 3, train, self.batch_norm)
    x = self.pool(self.unit(x, s(256), 3, train, self.batch_norm))
    x = x.reshape((x.shape[0], -1))
    for _ in range(2):
      x = Dropout(self.dropout, not train)(nn.relu(nn.Dense(self.dense)(x)))
    return nn.Dense(self.num_classes)(x)
