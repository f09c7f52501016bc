"""MNIST, a DCGAN: the generator maps a 64-d z to 7x7x64, upsamples to 14x14x32 and to
the 28x28 image (3x3 convolutions, batch norm, ReLU, tanh out); the discriminator is two
stride-2 4x4 convolutions (32, 64 channels, leaky ReLU); non-saturating loss, Adam (2e-4,
beta1 0.5) for each network, batch 64.

Train a classifier first: its penultimate-layer features measure the generated digits
(a Fréchet distance, like FID's formula but not Inception features):

    python -m practice_jax.main --config=configs/mnist.py --workdir=runs/mnist
    python -m practice_jax.main --config=configs/mnist_dcgan.py --workdir=runs/mnist_dcgan \\
        --config.task.feature_workdir=runs/mnist

Writes 8x8 samples from fixed noise at every epoch (images_during_training/) and
samples.png at the end; generated_quality.json holds the distance and the real-vs-real
reference (validation against test images).

Result: classifier Fréchet distance 103.9 after 5 epochs (5,000 generated images against
the 10,000 test images, in the 256 penultimate features of configs/mnist.py's CNN at
99.25% test accuracy; real validation vs test images: 3.4), 14m27s wall time (4m33s of
CPU: the 2-core AMD EPYC CPU machine was shared, load average about 8; jax 0.10.2,
2026-12-01).
"""

from practice_jax.config_base import base_config
from practice_jax.models.generative import model_config


def get_config():
  config = base_config("gan", "mnist")
  config.model = model_config("dcgan", latent_dim=64, generator_features=(64, 32),
                              discriminator_features=(32, 64))
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 2e-4
  config.optimizer.b1 = 0.5
  config.schedule.name = "constant"
  config.batch_size = 64
  config.num_epochs = 5.0
  return config
