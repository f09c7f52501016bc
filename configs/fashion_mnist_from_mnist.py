"""Fashion-MNIST fine-tuned from a CNN pre-trained on MNIST (transfer learning).

Pre-train first (the same model as configs/fashion_mnist_cnn.py, without flips):

    python -m practice_jax.main --config=configs/fashion_mnist_cnn.py \
        --config.data.name=mnist --config.task.augment.horizontal_flip=False \
        --config.num_epochs=3 --workdir=runs/mnist_cnn_pretrain

then fine-tune every parameter (the head is kept: both datasets have 10 classes):

    python -m practice_jax.main --config=configs/fashion_mnist_from_mnist.py \
        --workdir=runs/fashion_mnist_from_mnist

A linear probe: --config.optimizer.freeze='^(?!Dense_1)'. Fewer labels:
--config.data.train_examples=100. Measured grid: bench/transfer_labels.py.
"""

from practice_jax.config_base import base_config, model_config


def get_config():
  config = base_config(data="fashion_mnist")
  config.model = model_config("cnn", features=(32, 64), pools=("max", "max"),
                              batch_norm=True, dense=(256,), dense_dropout=0.3)
  config.init_from.workdir = "runs/mnist_cnn_pretrain"
  config.init_from.which = "last"
  config.task.augment.crop_padding = 2
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.weight_decay = 5e-4
  config.schedule.name = "warmup_cosine"
  config.schedule.warmup_epochs = 0.1
  config.batch_size = 128
  config.num_epochs = 3.0
  return config
