"""L-infinity adversarial attacks on images in pixel space: FGSM and PGD.

Pure functions of a per-example loss: `loss_fn(pixels) -> [batch]` maps images in pixel
space ([0, 1], before any standardisation) to each example's loss, and the attack returns
images that raise it, within `epsilon` of the originals in every pixel and inside the
valid range [0, 1]:

- ``fgsm`` (Goodfellow et al. 2015): one step of size epsilon along the sign of the
  input gradient.
- ``pgd`` (Madry et al. 2018): `steps` steps of size `step_size` along the gradient's
  sign, each projected back onto the epsilon ball around the originals and the valid
  range; optionally from a uniformly random start inside the ball (`noise`).

A masked-out or padded example only adds its own loss, so it changes no other example's
gradient (the loss is summed, not averaged, before differentiating).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

METHODS = ("fgsm", "pgd")
LOW, HIGH = 0.0, 1.0             # the valid pixel range


def _input_gradient(loss_fn: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
  return jax.grad(lambda p: jnp.sum(loss_fn(p)))(x)


def project(x: jax.Array, images: jax.Array, epsilon: float) -> jax.Array:
  """`x` clipped to the L-infinity ball of radius `epsilon` around `images`, then to the
  valid pixel range."""
  return jnp.clip(jnp.clip(x, images - epsilon, images + epsilon), LOW, HIGH)


def fgsm(loss_fn: Callable[[jax.Array], jax.Array], images: jax.Array,
         epsilon: float) -> jax.Array:
  """The fast gradient sign method: images + epsilon * sign(grad), in the valid range."""
  grad = _input_gradient(loss_fn, images)
  return project(images + epsilon * jnp.sign(grad), images, epsilon)


def pgd(loss_fn: Callable[[jax.Array], jax.Array], images: jax.Array, epsilon: float,
        steps: int, step_size: float, noise: jax.Array | None = None,
        unroll: bool = False) -> jax.Array:
  """Projected gradient descent on the loss (ascent), L-infinity.

  `noise`: uniform in [-1, 1] with the shape of `images` for a random start at
  images + epsilon * noise (projected), or None to start at the images. `unroll` unrolls
  the steps (for CPU, where XLA runs convolutions inside a loop slowly) instead of a
  `fori_loop` (constant compile time).
  """
  x = images if noise is None else project(images + epsilon * noise, images, epsilon)

  def step(_, x):
    grad = _input_gradient(loss_fn, x)
    return project(x + step_size * jnp.sign(grad), images, epsilon)

  return jax.lax.fori_loop(0, steps, step, x, unroll=bool(unroll) or None)


def uniform_noise(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Uniform noise in [-1, 1] for PGD's random start."""
  return jax.random.uniform(key, shape, jnp.float32, -1.0, 1.0)


def attack(method: str, loss_fn: Callable[[jax.Array], jax.Array], images: jax.Array,
           epsilon: float, steps: int = 1, step_size: float = 0.0,
           noise: jax.Array | None = None, unroll: bool = False) -> jax.Array:
  """`method` ('fgsm' or 'pgd') with its settings (FGSM takes only epsilon)."""
  if method == "fgsm":
    return fgsm(loss_fn, images, epsilon)
  if method == "pgd":
    return pgd(loss_fn, images, epsilon, steps, step_size, noise, unroll)
  raise ValueError(f"Unknown attack {method!r}: expected one of {', '.join(METHODS)}.")
