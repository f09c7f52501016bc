"""ResNet-18 (He et al., 2016), with the usual CIFAR stem or the ImageNet one.

The ImageNet stem (``stem='imagenet'``: 7x7 stride-2 conv + 3x3 stride-2 max-pool, for
224x224 images) would shrink a 32x32 image to 8x8 before the first block; the CIFAR
variant (``stem='cifar'``, the default) uses one 3x3 stride-1 conv instead. Then four stages of
two basic blocks (64, 128, 256, 512 channels; stride 2 from the second stage on), global
average pooling and a linear classifier. Batch norm statistics live in the 'batch_stats'
collection, carried in the train state.
"""

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from practice_jax.models import conv
from practice_jax.models.layers import batch_norm
from practice_jax.models.settings import each, one_of, positive


class BasicBlock(nn.Module):
  features: int
  strides: int
  norm: Callable
  conv_layer: Callable = nn.Conv

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    residual = x
    y = self.conv_layer(self.features, (3, 3), self.strides, padding=1, use_bias=False)(x)
    y = nn.relu(self.norm()(y))
    y = self.conv_layer(self.features, (3, 3), padding=1, use_bias=False)(y)
    y = self.norm(scale_init=nn.initializers.zeros)(y)  # each block starts as identity
    if residual.shape != y.shape:
      residual = self.conv_layer(self.features, (1, 1), self.strides,
                                 use_bias=False)(residual)
      residual = self.norm()(residual)
    return nn.relu(y + residual)


class ResNet(nn.Module):
  num_classes: int
  stage_sizes: Sequence[int] = (2, 2, 2, 2)     # ResNet-18
  width: int = 64
  bn_momentum: float = 0.9
  conv_impl: str = "auto"                       # conv lowering, see models/conv.py
  stem: str = "cifar"                           # 'cifar' (32x32) or 'imagenet' (224x224)

  SETTINGS = {"stem": one_of(("cifar", "imagenet")),
              "stage_sizes": each(positive, min_len=1), "width": positive,
              "bn_momentum": lambda m: None if 0.0 <= m < 1.0 else "must be in [0, 1).",
              "conv_impl": one_of(conv.CONV_IMPLS)}
  CPU_UNROLL = True   # convolutions: see parallel.py

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    norm = batch_norm(use_running_average=not train, momentum=self.bn_momentum,
                      epsilon=1e-5)
    impl = conv.check_impl(self.conv_impl)
    conv_layer = conv.layer(impl)
    if self.stem == "imagenet":
      x = conv_layer(self.width, (7, 7), 2, padding=3, use_bias=False)(x)
      x = nn.relu(norm()(x))
      x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    else:
      x = conv_layer(self.width, (3, 3), padding=1, use_bias=False)(x)
      x = nn.relu(norm()(x))
    for stage, blocks in enumerate(self.stage_sizes):
      for block in range(blocks):
        strides = 2 if stage > 0 and block == 0 else 1
        x = BasicBlock(self.width * 2 ** stage, strides, norm, conv_layer)(x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes)(x)
