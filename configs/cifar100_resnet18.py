"""CIFAR-100, ResNet-18 (CIFAR stem, batch norm) with exactly the recipe of
cifar10_resnet18.py: SGD + Nesterov momentum 0.9, L2 5e-4, warmup (1 epoch) + cosine
schedule, random crop (padding 4) and horizontal flip.

    python -m practice_jax.main --config=configs/cifar100_resnet18.py

A GPU/TPU config. Result: not measured here (no CIFAR-100 on this project's machines;
exercised on mock data in the tests).
"""

import importlib.util
import os


def get_config():
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cifar10_resnet18.py")
  spec = importlib.util.spec_from_file_location("cifar10_resnet18", path)
  cifar10 = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(cifar10)
  config = cifar10.get_config()
  config.data.name = "cifar100"
  return config
