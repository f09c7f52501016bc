"""MNIST, MLP 784-64-64-10 (ReLU; softmax in the loss) with plain SGD, the textbook setup.

    python -m practice_jax.main --config=configs/mnist_mlp_2x64.py

Result: 97.47% test accuracy after 10 epochs, 14 s wall time from process start, on the
2-core AMD EPYC CPU machine (jax 0.10.2, 2026-11-24).
"""

from practice_jax.config_base import base_config, model_config


def get_config():
  config = base_config()
  config.model = model_config("mlp", hidden=(64, 64), activation="relu")
  config.optimizer.name = "sgd"
  config.optimizer.momentum = 0.0
  config.optimizer.learning_rate = 0.1
  config.schedule.name = "constant"
  config.batch_size = 64
  config.num_epochs = 10.0
  return config
