"""MNIST, a class-conditional DCGAN: configs/mnist_dcgan.py with the label given to the
generator (one-hot beside z) and to a projection discriminator.

    python -m practice_jax.main --config=configs/mnist.py --workdir=runs/mnist
    python -m practice_jax.main --config=configs/mnist_cgan.py --workdir=runs/mnist_cgan \\
        --config.task.feature_workdir=runs/mnist

Besides the Fréchet distance in the classifier's features it reports generated_accuracy:
how often that classifier recognises the digit each image was generated for (per class
in generated_quality.json). samples.png has one row per class, one fixed z per column.

Result: classifier Fréchet distance 37.3 and generated_accuracy 97.60% (per class 90.8%
for 9 to 99.6% for 6) after 5 epochs (5,000 generated images, 500 per class; the same
classifier and reference as configs/mnist_dcgan.py: real vs real 3.4), 16m54s wall time
(4m25s of CPU: the 2-core AMD EPYC CPU machine was shared, load average about 8; jax
0.10.2, 2026-12-01).
"""

from practice_jax.config_base import base_config
from practice_jax.models.generative import model_config


def get_config():
  config = base_config("gan", "mnist")
  config.task.conditional = True
  config.model = model_config("dcgan", latent_dim=64, generator_features=(64, 32),
                              discriminator_features=(32, 64))
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 2e-4
  config.optimizer.b1 = 0.5
  config.schedule.name = "constant"
  config.batch_size = 64
  config.num_epochs = 5.0
  return config
