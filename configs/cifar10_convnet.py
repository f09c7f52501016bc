"""CIFAR-10, a plain ConvNet (conv64 - maxpool - conv128 - maxpool - dense512 - dense10)
with SGD lr 0.01, momentum 0.9, batch 64.

    python -m practice_jax.main --config=configs/cifar10_convnet.py

Result: not measured here (no CIFAR-10 on this project's machines; exercised on mock
data in the tests).
"""

from practice_jax.config_base import base_config, model_config


def get_config():
  config = base_config(data="cifar10")
  config.model = model_config("cnn", features=(64, 128), pools=("max", "max"),
                              dense=(512,))
  config.optimizer.name = "sgd"
  config.optimizer.momentum = 0.9
  config.optimizer.learning_rate = 0.01
  config.schedule.name = "constant"
  config.batch_size = 64
  config.num_epochs = 30.0
  return config
