"""Actor-critic MLP for discrete actions: two towers on the same observation, one giving
the policy's logits, the other the state value.

Separate towers (rather than a shared trunk) are what PPO on classic-control tasks
usually uses: the value loss, whose scale grows with the returns, does not disturb the
policy's features. Initialisation follows the PPO implementation details (Huang et al.,
2022): orthogonal weights with gain sqrt(2) in the hidden layers, 0.01 for the logits
(a near-uniform first policy) and 1 for the value.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from practice_jax.models.mlp import ACTIVATIONS
from practice_jax.models.settings import each, one_of, positive


class ActorCritic(nn.Module):
  num_classes: int              # the number of actions (the registry's name for the
                                # output size the data, here the environment, gives)
  hidden: Sequence[int] = (64, 64)
  activation: str = "tanh"

  SETTINGS = {"hidden": each(positive, min_len=1), "activation": one_of(ACTIVATIONS)}

  @nn.compact
  def __call__(self, obs: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """obs [batch, ...] -> (logits [batch, num_classes], value [batch])."""
    x = obs.reshape((obs.shape[0], -1)).astype(jnp.float32)
    act = ACTIVATIONS[self.activation]
    dense = lambda width, gain, name: nn.Dense(
        width, kernel_init=nn.initializers.orthogonal(gain),
        bias_init=nn.initializers.zeros, name=name)
    pi, v = x, x
    for i, width in enumerate(self.hidden):
      pi = act(dense(width, np.sqrt(2), f"actor_{i}")(pi))
      v = act(dense(width, np.sqrt(2), f"critic_{i}")(v))
    logits = dense(self.num_classes, 0.01, "logits")(pi)
    value = dense(1, 1.0, "value")(v)[:, 0]
    return logits, value
