"""CIFAR-10, ResNet-18 (CIFAR stem, batch norm) with SGD + Nesterov momentum 0.9, L2 5e-4,
warmup (1 epoch) + cosine schedule, random crop (padding 4) and horizontal flip.

    python -m practice_jax.main --config=configs/cifar10_resnet18.py

A GPU/TPU config (about 0.56 GFLOPs per image forward). Result: not measured here (no CIFAR-10 on this project's machines; exercised on mock
data in the tests).
"""

from practice_jax.config_base import base_config, model_config


def get_config():
  config = base_config(data="cifar10")
  config.model = model_config("resnet", stage_sizes=(2, 2, 2, 2), width=64)
  config.task.augment.crop_padding = 4
  config.task.augment.horizontal_flip = True
  config.optimizer.name = "sgd"
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = True
  config.optimizer.learning_rate = 0.1
  config.optimizer.l2 = 5e-4
  config.schedule.name = "warmup_cosine"
  config.schedule.warmup_epochs = 1.0
  config.batch_size = 128
  config.num_epochs = 100.0
  config.steps_per_dispatch = 50
  return config
