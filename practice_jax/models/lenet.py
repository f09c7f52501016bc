"""LeNet-5 (LeCun et al., 1998) as usually reproduced on 28x28 MNIST.

conv6 5x5 (padding 2) - tanh - avgpool 2 - conv16 5x5 - tanh - avgpool 2 - dense120 - tanh
- dense84 - tanh - dense(num_classes). The original's sparse C3 connections and RBF output
layer are replaced by a full conv and a linear layer, as in nearly every modern rendition.
"""

import flax.linen as nn
import jax.numpy as jnp


class LeNet5(nn.Module):
  num_classes: int
  activation: str = "tanh"        # "tanh" (the original) or "relu"

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    act = nn.tanh if self.activation == "tanh" else nn.relu
    x = act(nn.Conv(6, (5, 5), padding=2)(x))
    x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    x = act(nn.Conv(16, (5, 5), padding="VALID")(x))
    x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    x = act(nn.Dense(120)(x))
    x = act(nn.Dense(84)(x))
    return nn.Dense(self.num_classes)(x)
