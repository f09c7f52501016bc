"""A configurable plain CNN: conv stages (Conv -> [BatchNorm] -> ReLU -> pool), then dense.

With the defaults it is the Flax examples' MNIST CNN (conv32 - avgpool - conv64 - avgpool
- dense256), which is cheap on a CPU because each pool halves the next conv's input. The
PyTorch examples' net is ``features=(32, 64), pools=("none", "max"), padding="VALID",
conv_dropout=0.25, dense=(128,), dense_dropout=0.5``.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

POOLS = ("avg", "max", "none")


class CNN(nn.Module):
  num_classes: int
  features: Sequence[int] = (32, 64)
  kernel_size: int = 3
  padding: str = "SAME"
  pools: Sequence[str] = ("avg", "avg")   # one per conv stage: "avg", "max" or "none"
  batch_norm: bool = False
  conv_dropout: float = 0.0               # after the last conv stage
  dense: Sequence[int] = (256,)
  dense_dropout: float = 0.0              # after every hidden dense layer

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    k = (self.kernel_size, self.kernel_size)
    for width, pool in zip(self.features, self.pools, strict=True):
      x = nn.Conv(width, k, padding=self.padding, use_bias=not self.batch_norm)(x)
      if self.batch_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
      x = nn.relu(x)
      if pool == "avg":
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
      elif pool == "max":
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = nn.Dropout(self.conv_dropout, deterministic=not train)(x)
    x = x.reshape((x.shape[0], -1))
    for width in self.dense:
      x = nn.relu(nn.Dense(width)(x))
      x = nn.Dropout(self.dense_dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)
