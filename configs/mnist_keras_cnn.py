"""MNIST, the Keras-tutorial CNN (conv32 3x3 ReLU - maxpool 2 - flatten - dense10 softmax)
with Adam lr 1e-3 and early stopping (patience 3 on validation loss; the best checkpoint
is the one tested).

    python -m practice_jax.main --config=configs/mnist_keras_cnn.py

Result: 98.17% test accuracy (best checkpoint, epoch 9; early stopping after epoch 12),
53 s wall time from process start (245 s with XLA's own max-pool gradient), on the 2-core AMD EPYC CPU machine (jax 0.10.2,
2026-11-24).
"""

from practice_jax.config_base import base_config, model_config


def get_config():
  config = base_config()
  config.model = model_config("cnn", features=(32,), pools=("max",), padding="VALID",
                              dense=())
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.schedule.name = "constant"
  config.batch_size = 128
  config.num_epochs = 30.0
  config.early_stopping.patience = 3
  config.early_stopping.metric = "validation/loss"
  config.evaluate_checkpoint = "best"
  return config
