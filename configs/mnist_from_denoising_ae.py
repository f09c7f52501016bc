"""MNIST classified by a CNN whose convolutions start from a denoising autoencoder's encoder,
pre-trained on MNIST images without their labels (self-supervised pre-training, issue 17).

Pre-train first (configs/mnist_denoising_ae.py: the encoder is this model's Conv_0 and
Conv_1, conv32 - avgpool - conv64 - avgpool, the CNN of configs/mnist.py):

    python -m practice_jax.main --config=configs/mnist_denoising_ae.py \
        --workdir=runs/mnist_denoising_ae

then fine-tune on few labels (only the encoder's convolutions are taken: the decoder's
layers live under decoder/, and the two dense layers here start fresh):

    python -m practice_jax.main --config=configs/mnist_from_denoising_ae.py \
        --workdir=runs/mnist_from_denoising_ae --config.data.train_examples=100

The frozen encoder (its dense layers trained): --config.optimizer.freeze='^Conv_'. From
scratch: --config.init_from.workdir=''. Measured grid: bench/transfer_labels.py
--directions mnist_from_denoising_ae (README, transfer learning).
"""

from practice_jax.config_base import base_config, model_config


def get_config():
  config = base_config(data="mnist")
  config.model = model_config("cnn", features=(32, 64), pools=("avg", "avg"), dense=(256,))
  config.init_from.workdir = "runs/mnist_denoising_ae"
  config.init_from.which = "last"
  config.init_from.include = "^Conv_"
  config.task.augment.crop_padding = 2
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.weight_decay = 5e-4
  config.schedule.name = "warmup_cosine"
  config.schedule.warmup_epochs = 0.1
  config.batch_size = 128
  config.num_epochs = 3.0
  return config
