"""Fashion-MNIST with an AlexNet-style net (five convolutions at half AlexNet's channels, three max-pools, two dense layers of 1024 with dropout 0.5, batch norm in place of local response normalisation), AdamW and a one-cycle schedule, random crops and flips.

    python -m practice_jax.main --config=configs/fashion_mnist_alexnet.py

Krizhevsky et al.'s AlexNet scaled to 28x28 (models/classic.py says what each part of the net is).

Result: 89.27% test accuracy after 2 epochs, 357 s wall time from process start, on the
2-core AMD EPYC CPU machine while other jobs shared its cores (an upper bound), jax
0.10.2, seed 0, 2026-12-01.
"""

from practice_jax.config_base import base_config, model_config


def get_config():
  config = base_config(data="fashion_mnist")
  config.model = model_config("alexnet", width=0.5, batch_norm=True)
  config.task.augment.crop_padding = 2
  config.task.augment.horizontal_flip = True
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 2e-3
  config.optimizer.weight_decay = 5e-4
  config.schedule.name = "one_cycle"
  config.batch_size = 128
  config.num_epochs = 2.0
  return config
