"""Randomness that does not depend on how a batch is split over devices.

Under ``jit`` a random draw for the global batch is partitioned by XLA and every device
gets its rows of the same numbers. Under ``pmap`` each device sees only its rows, so a
draw of the local shape would give other numbers; ``for_batch`` draws for the global batch
and keeps this device's rows, so that the 'jit' and 'pmap' modes (and one device) train
the same trajectory. Models take ``axis_name`` (set by the task in 'pmap' mode only) and
use ``Dropout`` from here instead of ``nn.Dropout`` (same masks when ``axis_name`` is None).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


def for_batch(sample: Callable, key: jax.Array, shape: tuple[int, ...],
              axis_name: str | None = None) -> jax.Array:
  """`sample(key, shape)` for the rows of a batch; under pmap, the rows of the global
  batch (`shape[0]` per device) that belong to this device."""
  if axis_name is None:
    return sample(key, shape)
  rows = shape[0]
  draw = sample(key, (rows * jax.lax.axis_size(axis_name),) + tuple(shape[1:]))
  return jax.lax.dynamic_slice_in_dim(draw, jax.lax.axis_index(axis_name) * rows, rows)


class Dropout(nn.Module):
  """nn.Dropout whose mask is drawn for the global batch (see the module docstring)."""
  rate: float
  deterministic: bool = False
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    if self.deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    mask = for_batch(lambda k, s: jax.random.bernoulli(k, keep, s), self.make_rng("dropout"),
                     x.shape, self.axis_name)
    return jnp.where(mask, x / keep, jnp.zeros_like(x))
