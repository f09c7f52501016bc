"""Quantization-aware training (QAT): an image classifier trained through qwix's
fake-quantized ops, so that its int8 version loses less accuracy than post-training
quantization of a float-trained model.

The task is ``ClassificationTask`` with one change: its model is ``config.model`` wrapped
by ``qwix.quantize_model(model, qwix.QtProvider(rules))``. qwix intercepts every
``dot_general`` and ``conv_general_dilated`` of the model and runs it on int8-quantized
operands (``config.task.mode``: ``'w8a8'``, weights per output channel and activations
per example, both symmetric absmax int8, the scales computed from the values as they
come; ``'w8'``, int8 weights of the Dense layers, convolutions w8a8 as qwix needs;
``'w4a8'``, int4 weights of the Dense layers (per output channel) with int8 activations,
convolutions w8a8; ``'w4'``, int4 Dense weights, float activations, convolutions w8a8;
``'w2a8'``, 2-bit Dense weights (qwix's int2) with int8 activations, convolutions w8a8:
the same rules as ``compress quantize``'s qwix modes, so that what is trained is what PTQ
of its weights makes; there is no 'w4a4', whose int4 x int4 products do not compile on
XLA:CPU), dequantized for the float
arithmetic that follows (fake quantization). Gradients pass the rounding straight
through (qwix's QT ops keep the float operands as the backward pass's residuals).

With dynamic scales qwix adds no variables, so the state holds the plain classifier's
parameters under the same paths: checkpoints, resume, ``init_from`` (QAT as fine-tuning
of a float run), evaluation, ``compress quantize`` and ``export`` treat a QAT run as an
ordinary classifier. The evaluators report the fake-quantized model's accuracy (what the
int8 model will score); ``float_network`` is the same network in float, which
``compress``/``export`` use as the float reference and for export.

Convolutions: qwix quantizes only convolutions lowered to ``lax.conv_general_dilated``;
the project's fast CPU lowering 'im2col' (which ``conv_impl='auto'`` may pick on CPU) is
a matmul on patches that qwix cannot see as a weight, and would stay float. The QAT model
is therefore built with ``conv_impl='xla'`` (``nn.Conv``, the same parameters; also what
``compress quantize`` builds its quantized copy with), slower on CPU than the autotuned
choice (practice_jax/models/conv.py).

Needs qwix (``pip install -e '.[compress]'``); without it the config is refused in one
sentence.
"""

from __future__ import annotations

import ml_collections

from practice_jax.quantize import QWIX_MODES
from practice_jax.tasks.classification import ClassificationTask

# qwix's modes that train: w8a8_static's activation ranges are calibrated after training.
MODES = tuple(m for m in QWIX_MODES if m != "w8a8_static")


class QuantizationAwareTask(ClassificationTask):

  @staticmethod
  def config() -> ml_collections.ConfigDict:
    c = ClassificationTask.config()
    c.name = "quantization_aware"
    c.mode = "w8a8"         # 'w8a8': int8 weights and activations; 'w8', 'w4a8', 'w4': docstring
    return c

  @staticmethod
  def check(config: ml_collections.ConfigDict) -> str | None:
    from practice_jax import quantize
    if config.task.mode not in MODES:
      return (f"config.task.mode={config.task.mode!r} must be one of {', '.join(MODES)} "
              f"(int8 weights and activations; int8 Dense weights only; int4 Dense "
              f"weights with int8 activations; int4 Dense weights only; int2 Dense "
              f"weights with int8 activations).")
    if not quantize.qwix_available():
      return f"task 'quantization_aware' needs qwix: {quantize.QWIX_MISSING}"
    if config.model.get("dtype", "float32") != "float32":
      return (f"config.model.dtype={config.model.dtype!r}: quantization-aware training "
              f"fakes int8 and int4 in float32; leave config.model.dtype at 'float32'.")
    if config.task.adversarial_training.epsilon > 0:
      return ("config.task.adversarial_training is not supported with quantization-aware "
              "training; set its epsilon to 0 or use task 'classification'.")
    return ClassificationTask.check(config)

  def __init__(self, config: ml_collections.ConfigDict, source, parallel):
    super().__init__(config, source, parallel)
    import qwix

    from practice_jax import quantize
    self._float_network = self.model              # float, the config's own conv_impl
    self.model = qwix.quantize_model(quantize.float_model(self),
                                     qwix.QtProvider(quantize.rules(config.task.mode)))

  @property
  def float_network(self):
    """The same network without qwix's fake quantization (its int8 form is what
    `compress quantize` and `export --format=tflite_int8` make)."""
    return self._float_network

  def title(self) -> str:
    return (f"{self.config.model.name} ({self.config.task.mode} quantization-aware) on "
            f"{self.config.data.name}")
