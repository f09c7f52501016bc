"""MNIST, a denoising autoencoder: the encoder is configs/mnist.py's CNN trunk (conv32 -
avgpool - conv64 - avgpool, parameters Conv_0 and Conv_1, as the ``cnn`` classifier
names them), the decoder mirrors it (upsample - conv64 - upsample - conv32 - linear
conv1). Input: the image with 25% of its 4x4 patches zeroed and Gaussian noise of std
0.3 added (pixels in [0, 1], clipped), standardised as the classifier's input is;
target: the clean image; loss: mean squared error per pixel. AdamW, lr 2e-3 with
warmup and cosine decay.

    python -m practice_jax.main --config=configs/mnist_denoising_ae.py \
        --workdir=runs/mnist_denoising_ae

Writes denoising.png (corrupted / reconstructed / clean validation images) and the same
grid at every evaluation in images_during_training/. A classifier starts from its
encoder with --config.init_from.workdir=runs/mnist_denoising_ae
--config.init_from.include='^Conv_' on configs/mnist.py.

Result: see the README's self-supervised section (measured on the 2-core CPU machine).
"""

from practice_jax.config_base import base_config, model_config


def get_config():
  config = base_config("autoencoder", "mnist", "conv_autoencoder")
  config.model = model_config("conv_autoencoder", features=(32, 64), pools=("avg", "avg"))
  config.task.noise_std = 0.3
  config.task.mask_ratio = 0.25
  config.task.patch_size = 4
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 2e-3
  config.optimizer.weight_decay = 1e-4
  config.schedule.name = "warmup_cosine"
  config.schedule.warmup_epochs = 0.1
  config.batch_size = 128
  config.num_epochs = 1.0
  return config
