"""MNIST, MLP 784-512-10 with ReLU, AdamW lr 1e-3: the classic one-hidden-layer baseline.

    python -m practice_jax.main --config=configs/mnist_mlp_512.py

Result: 98.25% test accuracy after 10 epochs, 13 s wall time from process start, on the
2-core AMD EPYC CPU machine (jax 0.10.2, 2026-11-24).
"""

from practice_jax.config_base import base_config, model_config


def get_config():
  config = base_config()
  config.model = model_config("mlp", hidden=(512,), activation="relu")
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.weight_decay = 1e-4
  config.schedule.name = "cosine"
  config.batch_size = 128
  config.num_epochs = 10.0
  return config
