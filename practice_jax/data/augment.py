"""Data augmentation on the device, inside the compiled train step.

Pure functions of (key, images): the same key gives the same augmented batch, and the
train step derives its key from (seed, step), so augmentation is reproducible and a
resumed run sees exactly the augmented batches an uninterrupted one would.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from practice_jax.models.layers import for_batch


def random_crop(key: jax.Array, images: jax.Array, padding: int) -> jax.Array:
  """Zero-pads each NHWC image by `padding` pixels and crops back at a random offset."""
  if padding <= 0:
    return images
  n, h, w, _ = images.shape
  padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  offsets = for_batch(lambda k, s: jax.random.randint(k, s, 0, 2 * padding + 1), key,
                      (n, 2))

  def crop(image, offset):
    return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, image.shape[-1]))
  return jax.vmap(crop)(padded, offsets)


def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
  """Mirrors each image left-right with probability 1/2."""
  flip = for_batch(lambda k, s: jax.random.bernoulli(k, 0.5, s), key,
                   (images.shape[0], 1, 1, 1))
  return jnp.where(flip, images[:, :, ::-1, :], images)


def augment(key: jax.Array, images: jax.Array, crop_padding: int, horizontal_flip: bool
            ) -> jax.Array:
  """Random crop and flip; under pmap, the same numbers as for the whole global batch
  (models/layers.py)."""
  crop_key, flip_key = jax.random.split(key)
  images = random_crop(crop_key, images, crop_padding)
  if horizontal_flip:
    images = random_flip(flip_key, images)
  return images
