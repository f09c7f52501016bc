"""MNIST, the default experiment: a small CNN (the Flax examples' net) trained with AdamW.

    python -m practice_jax.main --config=configs/mnist.py

Result: (measuring)
"""

from practice_jax.config_base import base_config, model_config


def get_config():
  config = base_config()
  config.data.name = "mnist"
  config.model = model_config("cnn", features=(32, 64), pools=("avg", "avg"), dense=(256,))
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 2e-3
  config.optimizer.weight_decay = 1e-4
  config.schedule.name = "warmup_cosine"
  config.schedule.warmup_epochs = 0.5
  config.batch_size = 128
  config.num_epochs = 5.0
  return config
