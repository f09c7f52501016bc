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


def random_rotation(key: jax.Array, images: jax.Array, degrees: float) -> jax.Array:
  """Rotates each NHWC image about its centre by an angle drawn uniformly from
  [-degrees, degrees], bilinear, with zeros (the padding of random_crop) where the
  rotated image does not reach; uint8 in, uint8 out (rounded)."""
  if degrees <= 0:
    return images
  n, h, w, c = images.shape
  angles = for_batch(lambda k, s: jax.random.uniform(k, s, minval=-degrees, maxval=degrees),
                     key, (n,)) * (jnp.pi / 180.0)
  ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) - (h - 1) / 2,
                        jnp.arange(w, dtype=jnp.float32) - (w - 1) / 2, indexing="ij")

  def rotate(image, angle):
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    # Where each output pixel comes from: the inverse rotation of its coordinates.
    src_y = cos * ys - sin * xs + (h - 1) / 2
    src_x = sin * ys + cos * xs + (w - 1) / 2
    channels = [jax.scipy.ndimage.map_coordinates(image[..., i].astype(jnp.float32),
                                                  [src_y, src_x], order=1, mode="constant",
                                                  cval=0.0) for i in range(c)]
    out = jnp.stack(channels, axis=-1)
    if jnp.issubdtype(images.dtype, jnp.integer):
      out = jnp.clip(jnp.round(out), 0, jnp.iinfo(images.dtype).max)
    return out.astype(images.dtype)
  return jax.vmap(rotate)(images, angles)


def augment(key: jax.Array, images: jax.Array, crop_padding: int, horizontal_flip: bool,
            rotation_degrees: float = 0.0) -> jax.Array:
  """Random rotation, crop and flip; under pmap, the same numbers as for the whole global
  batch (models/layers.py). Without rotation the crops and flips are those of the
  versions before rotation existed (its key is derived apart)."""
  if rotation_degrees > 0:
    images = random_rotation(jax.random.fold_in(key, 2), images, rotation_degrees)
  crop_key, flip_key = jax.random.split(key)
  images = random_crop(crop_key, images, crop_padding)
  if horizontal_flip:
    images = random_flip(flip_key, images)
  return images
