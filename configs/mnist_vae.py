"""MNIST, a variational autoencoder: MLP encoder and decoder (784-512-256-20 and back),
Bernoulli likelihood on the grey levels, Adam.

    python -m practice_jax.main --config=configs/mnist_vae.py

Writes reconstructions, samples and a latent interpolation as PNG grids at every epoch
(images_during_training/) and of the final model (reconstructions.png, samples.png,
interpolation.png). With --config.task.binarize=True the images are binarised, so the ELBO
bounds a true log-likelihood of binary MNIST.

Result: test ELBO -103.08 nats per image (reconstruction 79.78 + KL 23.30; validation
-104.19) after 10 epochs, 121 s wall time from process start (52 s of CPU), on the 2-core
AMD EPYC CPU machine shared with other jobs (load average about 8; jax 0.10.2,
2026-12-01).
"""

from practice_jax.config_base import base_config
from practice_jax.models.generative import model_config


def get_config():
  config = base_config("vae", "mnist")
  config.model = model_config("vae", architecture="mlp", hidden=(512, 256), latent_dim=20)
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.schedule.name = "cosine"
  config.schedule.end_factor = 0.1
  config.batch_size = 128
  config.num_epochs = 10.0
  return config
