"""Fashion-MNIST with Network in Network (three mlpconv blocks of 48, 128 and 192 channels, global average pooling instead of dense layers), AdamW and a one-cycle schedule, random crops and flips.

    python -m practice_jax.main --config=configs/fashion_mnist_nin.py

Lin et al.'s Network in Network at half width for 28x28 (models/classic.py says what each part of the net is).

Result: 87.32% test accuracy after 2 epochs, 2177 s wall time from process start, on the
2-core AMD EPYC CPU machine while other jobs shared its cores (load average about 10;
an upper bound), jax 0.10.2, seed 0, 2026-12-01.
"""

from practice_jax.config_base import base_config, model_config


def get_config():
  config = base_config(data="fashion_mnist")
  config.model = model_config("nin", width=0.5, batch_norm=True)
  config.task.augment.crop_padding = 2
  config.task.augment.horizontal_flip = True
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 2e-3
  config.optimizer.weight_decay = 5e-4
  config.schedule.name = "one_cycle"
  config.batch_size = 128
  config.num_epochs = 2.0
  return config
