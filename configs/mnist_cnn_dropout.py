"""MNIST, the PyTorch examples' CNN (conv32 3x3 - conv64 3x3 - maxpool 2 - dropout 0.25 -
dense128 - dropout 0.5 - dense10) trained with SGD, momentum 0.9.

    python -m practice_jax.main --config=configs/mnist_cnn_dropout.py

Result: 98.99% test accuracy after 6 epochs, 158 s wall time from process start, on the
2-core AMD EPYC CPU machine (jax 0.10.2, conv_impl 'auto', 2026-11-24; 458 s with XLA's
own CPU convolutions).

Since 2026-12-03 `model.matmul_dtype="auto"`: on a CPU with AMX-BF16 the second
convolution runs as bfloat16 on AMX tiles (practice_jax/kernels) and the Dense layers'
matmuls in bfloat16, all accumulating in float32; nothing changes on other CPUs. On the
2-core Intel Xeon (11:34-11:58 UTC, `--config.seed=S --config.model.matmul_dtype=M`, one
run each, one after another): test accuracy float32 98.98% / 99.07% (seeds 0 / 1),
bfloat16 99.06% / 99.01%; wall time from process start, seed 1 on a quiet machine: 199 s
float32, 127 s bfloat16.
"""

from practice_jax.config_base import base_config, model_config


def get_config():
  config = base_config()
  config.model = model_config("cnn", features=(32, 64), pools=("none", "max"),
                              padding="VALID", conv_dropout=0.25, dense=(128,),
                              dense_dropout=0.5, matmul_dtype="auto")
  config.optimizer.name = "sgd"
  config.optimizer.momentum = 0.9
  config.optimizer.learning_rate = 0.05
  config.schedule.name = "cosine"
  config.batch_size = 128
  config.num_epochs = 6.0
  return config
