"""Fashion-MNIST, configs/fashion_mnist_cnn.py's batch-normalised CNN and optimizer
trained quantization-aware (int8 weights and activations of every convolution and Dense
layer, fake-quantized through qwix, gradients straight through; mode 'w8a8', or
--config.task.mode=w4a8 for int4 Dense weights; practice_jax/tasks/quantization_aware.py,
needs qwix: pip install -e '.[compress]'), for 5 epochs: the length of the float
Fashion-MNIST run the README's compression table compares it with
(configs/fashion_mnist_cnn.py --config.num_epochs=5).

    python -m practice_jax.main --config=configs/fashion_mnist_qat.py --workdir=runs/fashion_qat
    python -m practice_jax.compress quantize --workdir=runs/fashion_qat

The batch-norm statistics stay float (qwix quantizes the convolutions and the Dense
layers); the QAT model runs nn.Conv (conv_impl 'xla'), slower on CPU than the autotuned
convolution. Result, seed 0, 5 epochs: 90.80% test accuracy fake-quantized and as qwix
w8a8 int8, against 90.69% for the float CNN (5 epochs) and 90.76% for its w8a8 PTQ: within
noise, as on MNIST. With --config.task.mode=w2a8 (2-bit Dense weights): 89.30% as qwix
w2a8, against 87.40% for w2a8 PTQ of the float CNN (8 min 22 s). 19 min 30 s wall on the 2-core AMD EPYC CPU machine while other jobs
loaded it (jax 0.10.2, qwix 0.1.8, 2026-12-02).
"""

from practice_jax.config_base import base_config, model_config


def get_config():
  config = base_config(task="quantization_aware", data="fashion_mnist")
  config.task.mode = "w8a8"
  config.model = model_config("cnn", features=(32, 64), pools=("max", "max"),
                              batch_norm=True, dense=(256,), dense_dropout=0.3)
  config.task.augment.crop_padding = 2
  config.task.augment.horizontal_flip = True
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 3e-3
  config.optimizer.weight_decay = 5e-4
  config.schedule.name = "one_cycle"
  config.batch_size = 128
  config.num_epochs = 5.0
  return config
