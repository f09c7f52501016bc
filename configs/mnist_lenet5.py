"""MNIST, LeNet-5 (tanh, average pooling, 6-16-120-84-10) with SGD, momentum 0.9.

    python -m practice_jax.main --config=configs/mnist_lenet5.py

Result: 99.05% test accuracy after 10 epochs, 51 s wall time from process start, on the
2-core AMD EPYC CPU machine (jax 0.10.2, 2026-11-24).
"""

from practice_jax.config_base import base_config, model_config


def get_config():
  config = base_config()
  config.model = model_config("lenet5", activation="tanh")
  config.optimizer.name = "sgd"
  config.optimizer.momentum = 0.9
  config.optimizer.learning_rate = 0.05
  config.schedule.name = "cosine"
  config.batch_size = 128
  config.num_epochs = 10.0
  return config
