"""Layers that must know how a batch is split over devices, and nothing else does.

Under ``jit`` (the default) XLA partitions the global batch itself: a random draw of the
global shape gives every device its rows of the same numbers, and batch norm reduces over
the global batch. Under ``pmap`` each device traces its own rows, so these layers ask
``device_axis()`` whether they run under the parallel layer's pmap axis and, if so, draw
for the global batch and keep their rows (``for_batch``), or reduce batch norm statistics
over the devices (``BatchNorm``). The 'jit' and 'pmap' modes (and one device) then train
the same trajectory. Models use ``Dropout`` and ``BatchNorm`` from here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

# The axis name under which practice_jax/parallel.py pmaps a step.
DEVICE_AXIS = "devices"


def device_axis() -> str | None:
  """DEVICE_AXIS while tracing a step under pmap, else None."""
  try:
    jax.lax.axis_size(DEVICE_AXIS)
  except NameError:
    return None
  return DEVICE_AXIS


def for_batch(sample: Callable, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """`sample(key, shape)` for the rows of a batch; under pmap, the rows of the global
  batch (`shape[0]` per device) that belong to this device."""
  axis = device_axis()
  if axis is None:
    return sample(key, shape)
  rows = shape[0]
  draw = sample(key, (rows * jax.lax.axis_size(axis),) + tuple(shape[1:]))
  return jax.lax.dynamic_slice_in_dim(draw, jax.lax.axis_index(axis) * rows, rows)


class Dropout(nn.Module):
  """nn.Dropout whose mask is drawn for the global batch (see the module docstring)."""
  rate: float
  deterministic: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    if self.deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    mask = for_batch(lambda k, s: jax.random.bernoulli(k, keep, s), self.make_rng("dropout"),
                     x.shape)
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


def BatchNorm(**kwargs) -> nn.BatchNorm:  # noqa: N802 - used like the class it returns
  """nn.BatchNorm with its statistics over the global batch in every parallel mode."""
  return nn.BatchNorm(axis_name=device_axis(), **kwargs)


def batch_norm(**kwargs) -> Callable[..., nn.BatchNorm]:
  """A BatchNorm factory with fixed settings (for models that make many)."""
  return functools.partial(BatchNorm, **kwargs)
