"""MNIST, the PyTorch examples' CNN (conv32 3x3 - conv64 3x3 - maxpool 2 - dropout 0.25 -
dense128 - dropout 0.5 - dense10) trained with SGD, momentum 0.9.

    python -m practice_jax.main --config=configs/mnist_cnn_dropout.py

Result: 98.99% test accuracy after 6 epochs, 158 s wall time from process start, on the
2-core AMD EPYC CPU machine (jax 0.10.2, conv_impl 'auto', 2026-11-24; 458 s with XLA's
own CPU convolutions).
"""

from practice_jax.config_base import base_config, model_config


def get_config():
  config = base_config()
  config.model = model_config("cnn", features=(32, 64), pools=("none", "max"),
                              padding="VALID", conv_dropout=0.25, dense=(128,),
                              dense_dropout=0.5)
  config.optimizer.name = "sgd"
  config.optimizer.momentum = 0.9
  config.optimizer.learning_rate = 0.05
  config.schedule.name = "cosine"
  config.batch_size = 128
  config.num_epochs = 6.0
  return config
