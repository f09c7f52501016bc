"""MNIST CNN (configs/mnist.py's network and optimizer, 3 epochs) trained
quantization-aware at 4 bits: the Dense layers (98% of the parameters) on int4 weights
per output channel and int8 activations, the convolutions on int8 weights and
activations (qwix 0.1.8's convolution needs one type on both sides, and int4 x int4 does
not compile on XLA:CPU), fake-quantized, gradients straight through
(practice_jax/tasks/quantization_aware.py, mode 'w4a8'; needs qwix: pip install -e
'.[compress]'). Its int4 model is then made and measured by the same command as post-
training int4 quantization of a float-trained run:

    python -m practice_jax.main --config=configs/mnist_qat_int4.py --workdir=runs/mnist_qat_int4
    python -m practice_jax.compress quantize --workdir=runs/mnist_qat_int4 --modes=w4a8,ours4
    python -m practice_jax.compress quantize --workdir=runs/mnist --modes=w4a8,ours4   # PTQ

Result, seed 0, 3 epochs: 99.19% test accuracy fake-quantized and as qwix w4a8 int4
(424,304 parameter bytes, 7.8x smaller than float32). Post-training w4a8 of the float CNN
(configs/mnist.py, 3 epochs, 99.20%) already scores 99.17%: at 4 bits this CNN loses
nothing measurable to PTQ, so QAT has nothing to win back (configs/mnist_qat_int2.py is
where it does). 5 min 58 s wall on the 2-core AMD EPYC CPU machine, loaded by other
jobs (jax 0.10.2, qwix 0.1.8, 2026-12-02).
"""

from practice_jax.config_base import base_config, model_config


def get_config():
  config = base_config(task="quantization_aware")
  config.task.mode = "w4a8"
  config.model = model_config("cnn", features=(32, 64), pools=("avg", "avg"), dense=(256,))
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 2e-3
  config.optimizer.weight_decay = 1e-4
  config.schedule.name = "warmup_cosine"
  config.schedule.warmup_epochs = 0.5
  config.batch_size = 128
  config.num_epochs = 3.0
  return config
