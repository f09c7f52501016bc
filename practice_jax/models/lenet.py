"""LeNet-5 (LeCun et al., 1998) as usually reproduced on 28x28 MNIST.

conv6 5x5 (padding 2) - tanh - avgpool 2 - conv16 5x5 - tanh - avgpool 2 - dense120 - tanh
- dense84 - tanh - dense(num_classes). The original's sparse C3 connections and RBF output
layer are replaced by a full conv and a linear layer, as in nearly every modern rendition.
"""


import flax.linen as nn
import jax.numpy as jnp

from practice_jax.models import conv
from practice_jax.models.settings import one_of


class LeNet5(nn.Module):
  num_classes: int
  activation: str = "tanh"        # "tanh" (the original) or "relu"
  conv_impl: str = "auto"         # conv and pool lowering, see models/conv.py

  SETTINGS = {"activation": one_of(("tanh", "relu")), "conv_impl": one_of(conv.CONV_IMPLS)}
  CPU_UNROLL = True   # convolutions: see parallel.py

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    act = nn.tanh if self.activation == "tanh" else nn.relu
    impl = conv.check_impl(self.conv_impl)
    conv_layer = conv.layer(impl)
    x = act(conv_layer(6, (5, 5), padding=2)(x))
    x = conv.pool("avg", x, impl)
    x = act(conv_layer(16, (5, 5), padding="VALID")(x))
    x = conv.pool("avg", x, impl)
    x = x.reshape((x.shape[0], -1))
    x = act(nn.Dense(120)(x))
    x = act(nn.Dense(84)(x))
    return nn.Dense(self.num_classes)(x)
