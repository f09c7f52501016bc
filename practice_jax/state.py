"""The train state of single-model tasks: everything a step reads and writes, as one
pytree of arrays.

It holds no functions (the model and optimizer live in the task), so it saves and
restores with orbax as it is, and a step is a pure ``(state, batch) -> (state, metrics)``.
Tasks of other shapes (two models, a frozen teacher, an environment) define their own
state: the loop only needs a pytree with a ``step`` counter.
"""

from __future__ import annotations

from typing import Any

import flax
import jax

# Independent random streams, all derived from the seed: the data order, the parameter
# initialisation and the per-step randomness (dropout, augmentation) never share keys.
DATA_STREAM, INIT_STREAM, STEP_STREAM = 0, 1, 2


def stream_key(seed: int, stream: int) -> jax.Array:
  return jax.random.fold_in(jax.random.PRNGKey(seed), stream)


@flax.struct.dataclass
class TrainState:
  step: jax.Array               # int32 scalar: number of optimizer updates applied
  params: Any
  opt_state: Any
  model_state: Any              # mutable collections, e.g. {'batch_stats': ...}; {} if none
  key: jax.Array                # base key of the per-step stream

  def step_key(self) -> jax.Array:
    """The key for this step's randomness: a function of (seed, step) only."""
    return jax.random.fold_in(self.key, self.step)
