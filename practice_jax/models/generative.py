"""Generative models: a variational autoencoder (MLP or convolutional encoder and decoder)
and a DCGAN generator and discriminator, optionally class-conditional.

They are not classifiers (no ``num_classes`` logits out of one ``__call__``), so they are
not in the classifier registry of models/__init__.py: the generative tasks
(tasks/generative.py) build them from ``config.model`` through ``vae``/``dcgan`` here,
which check their settings with the same rules (settings.py) before anything is built.

The convolutional parts keep CPU runs fast (see conv.py): the encoder and discriminator
are stride-2 4x4 convolutions (each halves the image, DCGAN's discriminator), the decoder
and generator upsample by repetition and convolve (3x3) instead of transposed
convolutions, which also avoids their checkerboard artefacts.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from practice_jax.models import conv
from practice_jax.models.layers import BatchNorm
from practice_jax.models.settings import check as check_rules
from practice_jax.models.settings import did_you_mean, each, one_of, positive

ARCHITECTURES = ("mlp", "conv")

# Every setting of each model with its default (config.model), and what it accepts.
DEFAULTS = {
    "vae": {
        "architecture": "mlp",          # "mlp" or "conv" encoder and decoder
        "hidden": (512, 256),           # mlp: hidden widths; conv: channels per stage
        "latent_dim": 20,
        "conv_impl": "auto",            # conv lowering, see models/conv.py
    },
    "dcgan": {
        "latent_dim": 64,
        "generator_features": (64, 32),       # channels at 1/4, 1/2 the image's size
        "discriminator_features": (32, 64),   # channels per stride-2 stage
        "batch_norm": True,                   # in the generator (DCGAN)
        "conv_impl": "auto",
    },
}
RULES = {
    "vae": {"architecture": one_of(ARCHITECTURES), "hidden": each(positive, min_len=1),
            "latent_dim": positive, "conv_impl": one_of(conv.CONV_IMPLS)},
    "dcgan": {"latent_dim": positive, "generator_features": each(positive, min_len=1),
              "discriminator_features": each(positive, min_len=1),
              "conv_impl": one_of(conv.CONV_IMPLS)},
}


def model_config(name: str, **settings) -> ml_collections.ConfigDict:
  """config.model for generative model `name`, every setting with its default."""
  values = dict(DEFAULTS[name])
  unknown = sorted(set(settings) - set(values))
  if unknown:
    raise ValueError(f"model {name!r} has no settings {unknown}; it has {sorted(values)}")
  values.update(settings)
  return ml_collections.ConfigDict({"name": name, **values})


def check(cfg: ml_collections.ConfigDict, name: str) -> str | None:
  """The first problem with a config.model section for model `name`, or None."""
  if cfg.name != name:
    return (f"config.model.name={cfg.name!r}: this task trains the model {name!r}; start "
            f"from practice_jax.models.generative.model_config({name!r}).")
  allowed = sorted(DEFAULTS[name])
  for key in cfg:
    if key != "name" and key not in allowed:
      hint = did_you_mean(key, allowed)
      return (f"Model {name!r} has no setting config.model.{key}: {hint}its settings are "
              f"{', '.join(allowed)}.")
  return check_rules({k: v for k, v in cfg.items() if k != "name"}, RULES[name])


def conv_stages(cfg: ml_collections.ConfigDict) -> int:
  """How many times the convolutional parts halve (or double) the image: 0 for an MLP."""
  if cfg.name == "vae":
    return len(cfg.hidden) if cfg.architecture == "conv" else 0
  return max(len(cfg.generator_features), len(cfg.discriminator_features))


def uses_convolutions(cfg: ml_collections.ConfigDict) -> bool:
  """Whether to unroll the train steps on CPU (see parallel.py)."""
  return conv_stages(cfg) > 0


# -- building blocks ---------------------------------------------------------------------

class ConvEncoder(nn.Module):
  """Stride-2 4x4 convolutions with leaky ReLU (each halves the image) -> flat features."""
  features: Sequence[int]
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    conv_layer = conv.layer(self.conv_impl)
    for width in self.features:
      x = nn.leaky_relu(conv_layer(width, (4, 4), strides=2, padding="SAME")(x), 0.2)
    return x.reshape((x.shape[0], -1))


def upsample(x: jnp.ndarray) -> jnp.ndarray:
  """Nearest-neighbour 2x upsampling of NHWC maps, by broadcasting (its gradient is a
  sum; jnp.repeat's is a scatter, several times slower on CPU)."""
  n, h, w, c = x.shape
  return jnp.broadcast_to(x[:, :, None, :, None], (n, h, 2, w, 2, c)).reshape(
      n, 2 * h, 2 * w, c)


class ConvDecoder(nn.Module):
  """A vector -> a map of 1/2**len(features) the image's size with features[0] channels
  -> per stage: upsample 2x and 3x3 conv to the next width ([batch norm], ReLU), the
  last stage to the image's channels (no activation). The widest maps stay small: the
  one convolution at full size only makes the output."""
  features: Sequence[int]
  image_shape: Sequence[int]
  batch_norm: bool = False
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, z: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    h, w, c = self.image_shape
    scale = 2 ** len(self.features)
    conv_layer = conv.layer(self.conv_impl)

    def norm_relu(x):
      if self.batch_norm:
        x = BatchNorm(use_running_average=not train, momentum=0.9)(x)
      return nn.relu(x)

    x = nn.Dense((h // scale) * (w // scale) * self.features[0],
                 use_bias=not self.batch_norm)(z)
    x = norm_relu(x.reshape((z.shape[0], h // scale, w // scale, self.features[0])))
    for width in self.features[1:]:
      x = norm_relu(conv_layer(width, (3, 3), padding="SAME",
                               use_bias=not self.batch_norm)(upsample(x)))
    return conv_layer(c, (3, 3), padding="SAME")(upsample(x))


class MLPEncoder(nn.Module):
  hidden: Sequence[int]

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = x.reshape((x.shape[0], -1))
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
    return x


class MLPDecoder(nn.Module):
  hidden: Sequence[int]
  image_shape: Sequence[int]

  @nn.compact
  def __call__(self, z: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = z
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
    size = self.image_shape[0] * self.image_shape[1] * self.image_shape[2]
    return nn.Dense(size)(x).reshape((z.shape[0], *self.image_shape))


# -- the VAE ---------------------------------------------------------------------------------

class VAE(nn.Module):
  """q(z|x) = N(mean, diag(exp(log_var))) from the encoder; the decoder gives, per pixel,
  the logits (Bernoulli likelihood) or the mean before a sigmoid (Gaussian) of p(x|z).
  The decoder mirrors the encoder's widths."""
  image_shape: Sequence[int]
  architecture: str = "mlp"
  hidden: Sequence[int] = (512, 256)
  latent_dim: int = 20
  conv_impl: str = "auto"

  def setup(self):
    reverse = tuple(reversed(self.hidden))
    if self.architecture == "conv":
      self.encoder = ConvEncoder(self.hidden, self.conv_impl)
      self.decoder = ConvDecoder(reverse, self.image_shape, conv_impl=self.conv_impl)
    else:
      self.encoder = MLPEncoder(self.hidden)
      self.decoder = MLPDecoder(reverse, self.image_shape)
    self.posterior = nn.Dense(2 * self.latent_dim)

  def encode(self, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Images scaled to [0, 1] -> (mean, log variance) of q(z|x), each [batch, latent]."""
    mean, log_var = jnp.split(self.posterior(self.encoder(x)), 2, axis=-1)
    return mean, log_var

  def decode(self, z: jnp.ndarray) -> jnp.ndarray:
    """Latents [batch, latent] -> per-pixel logits [batch, *image_shape]."""
    return self.decoder(z)

  def __call__(self, x: jnp.ndarray, key: jax.Array):
    """(logits of p(x|z) for one reparameterised z ~ q(z|x), mean, log variance)."""
    mean, log_var = self.encode(x)
    z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape, mean.dtype)
    return self.decode(z), mean, log_var


def vae(cfg: ml_collections.ConfigDict, image_shape: Sequence[int]) -> VAE:
  settings = {k: v for k, v in cfg.items() if k != "name"}
  return VAE(image_shape=tuple(image_shape), **settings)


# -- the DCGAN -------------------------------------------------------------------------------

class Generator(nn.Module):
  """z [batch, latent] (and class labels when conditional) -> images in [-1, 1]."""
  image_shape: Sequence[int]
  features: Sequence[int] = (64, 32)
  num_classes: int = 0                  # > 0: class-conditional (one-hot label beside z)
  batch_norm: bool = True
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, z: jnp.ndarray, labels: jnp.ndarray | None = None,
               train: bool = False) -> jnp.ndarray:
    if self.num_classes:
      z = jnp.concatenate([z, jax.nn.one_hot(labels, self.num_classes, dtype=z.dtype)], -1)
    x = ConvDecoder(self.features, self.image_shape, self.batch_norm, self.conv_impl)(z, train)
    return jnp.tanh(x)


class Discriminator(nn.Module):
  """Images in [-1, 1] (and labels) -> one logit each: real (high) or generated (low).
  Conditional: a projection discriminator (Miyato & Koyama, 2018), the logit plus the
  inner product of the features with a learned embedding of the label."""
  features: Sequence[int] = (32, 64)
  num_classes: int = 0
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray, labels: jnp.ndarray | None = None) -> jnp.ndarray:
    h = ConvEncoder(self.features, self.conv_impl)(x)
    logit = nn.Dense(1)(h)[:, 0]
    if self.num_classes:
      logit = logit + jnp.sum(nn.Embed(self.num_classes, h.shape[-1])(labels) * h, -1)
    return logit


def dcgan(cfg: ml_collections.ConfigDict, image_shape: Sequence[int], num_classes: int = 0
          ) -> tuple[Generator, Discriminator]:
  """The generator and discriminator of `cfg`; `num_classes` > 0 makes them conditional."""
  generator = Generator(tuple(image_shape), tuple(cfg.generator_features), num_classes,
                        cfg.batch_norm, cfg.conv_impl)
  return generator, Discriminator(tuple(cfg.discriminator_features), num_classes,
                                  cfg.conv_impl)
