"""A configurable plain CNN: conv stages (Conv -> [BatchNorm] -> ReLU -> pool), then dense.

With the defaults it is the Flax examples' MNIST CNN (conv32 - avgpool - conv64 - avgpool
- dense256), which is cheap on a CPU because each pool halves the next conv's input. The
PyTorch examples' net is ``features=(32, 64), pools=("none", "max"), padding="VALID",
conv_dropout=0.25, dense=(128,), dense_dropout=0.5``.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from practice_jax.models import conv
from practice_jax.models.layers import BatchNorm, Dropout
from practice_jax.models.settings import each, fraction, one_of, positive

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
  conv_impl: str = "auto"                 # conv and pool lowering, see models/conv.py

  SETTINGS = {"features": each(positive, min_len=1), "kernel_size": positive,
              "padding": one_of(("SAME", "VALID")), "pools": each(one_of(POOLS)),
              "conv_dropout": fraction, "dense": each(positive), "dense_dropout": fraction,
              "conv_impl": one_of(conv.CONV_IMPLS)}
  CPU_UNROLL = True   # convolutions: see parallel.py

  @staticmethod
  def check_settings(settings: dict) -> str | None:
    pools, features = settings.get("pools", ()), settings.get("features", ())
    if len(pools) != len(features):
      return (f"config.model.pools has {len(pools)} entries but config.model.features has "
              f"{len(features)}; give one pool per conv stage.")
    return None

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    k = (self.kernel_size, self.kernel_size)
    impl = conv.check_impl(self.conv_impl)
    conv_layer = conv.layer(impl)
    # An unpooled first stage's output also laid out [C, H, W, N] (one small matmul from
    # the image), which spares the second conv's kernel gradient a transpose (conv.Conv).
    # After a pool the transpose is 4x smaller and cheaper than the second matmul: the
    # MNIST config's step measured 3% slower with it.
    two_layouts = (conv_layer is not nn.Conv and not self.batch_norm and x.shape[-1] <= 3
                   and len(self.features) > 1 and self.pools[0] == "none")
    x_cnhw = None
    for i, (width, pool) in enumerate(zip(self.features, self.pools, strict=True)):
      layer = conv_layer(width, k, padding=self.padding, use_bias=not self.batch_norm)
      if two_layouts and i == 0:
        x, x_cnhw = layer(x, cnhw_out=True)
        x_cnhw = nn.relu(x_cnhw)                  # no batch norm, no pool: see above
      else:
        x = layer(x) if x_cnhw is None else layer(x, x_cnhw)
        x_cnhw = None
      if self.batch_norm:
        x = BatchNorm(use_running_average=not train, momentum=0.9)(x)
      x = nn.relu(x)
      if pool != "none":
        x = conv.pool(pool, x, impl)
    x = Dropout(self.conv_dropout, not train)(x)
    x = x.reshape((x.shape[0], -1))
    for width in self.dense:
      x = nn.relu(nn.Dense(width)(x))
      x = Dropout(self.dense_dropout, not train)(x)
    return nn.Dense(self.num_classes)(x)
