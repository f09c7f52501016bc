"""Multi-layer perceptron: flatten, [Dense -> activation -> dropout] x N, Dense."""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from practice_jax.models.layers import Dropout
from practice_jax.models.settings import each, fraction, one_of, positive

ACTIVATIONS = {"relu": nn.relu, "gelu": nn.gelu, "tanh": nn.tanh, "sigmoid": nn.sigmoid,
               "silu": nn.silu}


class MLP(nn.Module):
  num_classes: int
  hidden: Sequence[int] = (512,)
  activation: str = "relu"
  dropout: float = 0.0

  SETTINGS = {"hidden": each(positive), "activation": one_of(ACTIVATIONS), "dropout": fraction}

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = x.reshape((x.shape[0], -1))
    for width in self.hidden:
      x = ACTIVATIONS[self.activation](nn.Dense(width)(x))
      x = Dropout(self.dropout, not train)(x)
    return nn.Dense(self.num_classes)(x)
