"""MNIST CNN (configs/mnist.py's network and optimizer) trained quantization-aware: every
convolution and Dense layer runs on int8 weights and int8 activations through qwix's
fake quantization, gradients straight through (practice_jax/tasks/quantization_aware.py;
needs qwix: pip install -e '.[compress]'). The parameters are a plain CNN's, so the int8
model is then made and measured by the same command as for a float-trained run:

    python -m practice_jax.main --config=configs/mnist_qat.py --workdir=runs/mnist_qat
    python -m practice_jax.compress quantize --workdir=runs/mnist_qat

Result, seed 0, 3 epochs: 99.18% test accuracy for the fake-quantized (w8a8) model; as
int8 by qwix w8a8 PTQ of its weights 99.18%, as a TF Lite full-integer model 99.94%
top-1 agreement with it (0.84 MB, batch-1 0.055 ms). The same CNN trained in float
(configs/mnist.py, 3 epochs): 99.20%, qwix w8a8 99.19%: on MNIST int8 PTQ already loses
almost nothing, so QAT has nothing to win back here. 10 min 25 s wall on the 2-core AMD
EPYC CPU machine while other jobs loaded it (load average ~13; jax 0.10.2, qwix 0.1.8,
2026-12-02; the QAT model runs nn.Conv, conv_impl 'xla').
"""

from practice_jax.config_base import base_config, model_config


def get_config():
  config = base_config(task="quantization_aware")
  config.task.mode = "w8a8"
  config.model = model_config("cnn", features=(32, 64), pools=("avg", "avg"), dense=(256,))
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 2e-3
  config.optimizer.weight_decay = 1e-4
  config.schedule.name = "warmup_cosine"
  config.schedule.warmup_epochs = 0.5
  config.batch_size = 128
  config.num_epochs = 3.0
  return config
