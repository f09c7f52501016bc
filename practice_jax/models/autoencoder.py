"""A convolutional autoencoder whose encoder is the ``cnn`` classifier's trunk.

The encoder is the conv stages of models/cnn.py (Conv -> [BatchNorm] -> ReLU -> pool,
SAME padding), built by the same code in the same order, so its parameters have the
classifier's paths and shapes: ``Conv_0``, ``Conv_1``, ... (and ``BatchNorm_0``, ...) at
the top level. ``config.init_from`` with ``include='^Conv_'`` (and ``BatchNorm_`` with
batch norm) moves them into a ``cnn`` of the same ``features``, ``kernel_size`` and
``batch_norm`` without any rename; the classifier's dense layers start fresh. The
decoder (the submodule ``decoder``) mirrors the stages: for each pooled stage, from the
last, a 2x nearest-neighbour upsampling and a conv, then a linear conv to the image's
channels: the pixels, trained towards [0, 1].
"""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from practice_jax.models import conv
from practice_jax.models.cnn import POOLS
from practice_jax.models.layers import BatchNorm
from practice_jax.models.settings import each, one_of, positive


class Decoder(nn.Module):
  features: Sequence[int]
  kernel_size: int
  pools: Sequence[str]
  channels: int
  conv_impl: str

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    k = (self.kernel_size, self.kernel_size)
    conv_layer = conv.layer(conv.check_impl(self.conv_impl))
    for width, pool in reversed(list(zip(self.features, self.pools, strict=True))):
      if pool != "none":
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
      x = nn.relu(conv_layer(width, k, padding="SAME")(x))
    # Linear output: a sigmoid here saturates and the net gets stuck drawing black
    # (measured on MNIST: MSE 0.11 for hundreds of steps); MSE pulls it to [0, 1] anyway.
    return conv_layer(self.channels, k, padding="SAME")(x)


class ConvAutoencoder(nn.Module):
  features: Sequence[int] = (32, 64)
  kernel_size: int = 3
  pools: Sequence[str] = ("avg", "avg")   # one per conv stage: "avg", "max" or "none"
  batch_norm: bool = False
  conv_impl: str = "auto"

  SETTINGS = {"features": each(positive, min_len=1), "kernel_size": positive,
              "pools": each(one_of(POOLS)), "conv_impl": one_of(conv.CONV_IMPLS)}
  CPU_UNROLL = True   # convolutions: see parallel.py

  @staticmethod
  def check_settings(settings: dict) -> str | None:
    pools, features = settings.get("pools", ()), settings.get("features", ())
    if len(pools) != len(features):
      return (f"config.model.pools has {len(pools)} entries but config.model.features has "
              f"{len(features)}; give one pool per conv stage.")
    return None

  def downsampling(self) -> int:
    """How many times the encoder halves the image."""
    return sum(pool != "none" for pool in self.pools)

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """[batch, h, w, c] standardised images -> [batch, h, w, c] pixels (about [0, 1])."""
    channels = x.shape[-1]
    k = (self.kernel_size, self.kernel_size)
    impl = conv.check_impl(self.conv_impl)
    conv_layer = conv.layer(impl)
    # The encoder: models/cnn.py's conv stages, the same layers in the same order.
    for width, pool in zip(self.features, self.pools, strict=True):
      x = conv_layer(width, k, padding="SAME", use_bias=not self.batch_norm)(x)
      if self.batch_norm:
        x = BatchNorm(use_running_average=not train, momentum=0.9)(x)
      x = nn.relu(x)
      if pool != "none":
        x = conv.pool(pool, x, impl)
    return Decoder(tuple(self.features), self.kernel_size, tuple(self.pools), channels,
                   self.conv_impl, name="decoder")(x)
