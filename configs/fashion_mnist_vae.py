"""Fashion-MNIST, a convolutional variational autoencoder: two stride-2 4x4 convolutions
(32, 64 channels) to a 20-d latent, and back by upsampling and 3x3 convolutions; Bernoulli
likelihood on the grey levels, Adam.

    python -m practice_jax.main --config=configs/fashion_mnist_vae.py

Prepare the data offline first if needed (the four original .gz files in FOLDER):
    python -m practice_jax.data.prepare fashion_mnist --manual_dir=FOLDER

Result: test ELBO -246.55 nats per image (reconstruction 227.85 + KL 18.70; validation
-243.65) after 10 epochs, 11m11s wall time (6m00s of CPU: the 2-core AMD EPYC CPU machine
was shared, load average about 8; jax 0.10.2, 2026-12-01).
"""

from practice_jax.config_base import base_config
from practice_jax.models.generative import model_config


def get_config():
  config = base_config("vae", "fashion_mnist")
  config.model = model_config("vae", architecture="conv", hidden=(32, 64), latent_dim=20)
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.schedule.name = "cosine"
  config.schedule.end_factor = 0.1
  config.batch_size = 128
  config.num_epochs = 10.0
  return config
