"""Post-training int8 quantization of a trained image classifier.

Two implementations, measured side by side by ``python -m practice_jax.compress
quantize --workdir=W``:

- **qwix** (Google's JAX quantization library, the successor of AQT; optional: ``pip
  install -e '.[compress]'``): the Linen model is wrapped by ``qwix.quantize_model`` with
  a ``PtqProvider``, which intercepts its ``dot_general`` and ``conv_general_dilated``
  calls; ``qwix.quantize_params`` turns the trained float weights into int8 ``QArray``s
  (per output channel, symmetric, absmax), and the ops run on int8 operands. Modes:

  - ``w8``: Dense kernels int8, activations float (weight-only). qwix 0.1.8 quantizes a
    convolution only with the same type for weights and activations (its
    ``conv_general_dilated`` raises otherwise), so convolutions run w8a8 dynamic here.
  - ``w8a8``: every layer's weights and input activations int8; the activations' scales
    computed from each batch as it comes (dynamic range).
  - ``w8a8_static``: the same with fixed activation scales calibrated once on training
    images (static range: the scales become parameters, as an int8 runtime needs).

  The project's fast CPU convolution (models/conv.py's ``Conv``, for conv_impl other than
  'xla') casts its kernel with ``astype``, which qwix 0.1.8's quantized weights do not
  support (``flax_util.update_boxed``: "Unsupported type: QArray"); the quantized model is
  therefore built with ``conv_impl='xla'`` (``nn.Conv``, whose parameters are the same).

- **ours** (``int8_weights``, no library): weight-only, per output channel, symmetric:
  ``scale = max|w| / 127`` over all axes but the last, ``q = round(w / scale)`` in
  [-127, 127]; the model runs on the dequantized weights ``q * scale`` (what an int8
  weight store costs in accuracy, without int8 arithmetic). Every weight is within half a
  step (scale / 2) of its float value.

The size is the bytes of the parameters as stored: int8 values plus float32 scales for
the quantized kernels, float32 for everything else (biases, batch-norm statistics).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

QWIX_MODES = ("w8", "w8a8", "w8a8_static")
QWIX_MISSING = ("qwix is not installed: pip install -e '.[compress]' (qwix>=0.1.8, "
                "pure Python; it resolves with the project's pins).")
KERNEL_NAMES = ("kernel",)


def qwix_available() -> bool:
  return importlib.util.find_spec("qwix") is not None


# -- ours: weight-only per-channel symmetric int8 -----------------------------------------

def quantize_int8(w: jax.Array) -> tuple[np.ndarray, np.ndarray]:
  """(int8 values, float32 scales per output channel, the last axis) of `w`."""
  w = np.asarray(w, np.float32)
  axes = tuple(range(w.ndim - 1))
  scale = np.max(np.abs(w), axis=axes, keepdims=True) / 127.0
  scale = np.where(scale > 0, scale, 1.0).astype(np.float32)   # all-zero channels
  q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
  return q, scale


def dequantize_int8(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
  return q.astype(np.float32) * scale


def _is_kernel(path) -> bool:
  last = path[-1]
  return str(getattr(last, "key", last)) in KERNEL_NAMES


def int8_weights(params: Any) -> tuple[Any, Any]:
  """(quantized tree, dequantized float tree): every kernel (ndim >= 2) as {'q', 'scale'}
  and its dequantized copy; other leaves as they are."""
  def quantize(path, p):
    if _is_kernel(path) and np.ndim(p) >= 2:
      q, scale = quantize_int8(p)
      return {"q": q, "scale": scale}
    return np.asarray(p)
  quantized = jax.tree_util.tree_map_with_path(quantize, params)
  dequantized = jax.tree_util.tree_map_with_path(
      lambda path, p: dequantize_int8(**quantize(path, p)) if (
          _is_kernel(path) and np.ndim(p) >= 2) else np.asarray(p), params)
  return quantized, dequantized


def size_bytes(tree: Any) -> int:
  """Bytes of every array in `tree` (int8 values count one byte each)."""
  return int(sum(np.asarray(x).nbytes for x in jax.tree.leaves(tree)))


# -- qwix -----------------------------------------------------------------------------------

def rules(mode: str) -> list:
  """qwix's quantization rules of `mode` (PTQ here, QAT in tasks/quantization_aware.py)."""
  import qwix
  if mode == "w8":
    return [qwix.QuantizationRule(module_path=r".*Conv.*", weight_qtype="int8",
                                  act_qtype="int8"),
            qwix.QuantizationRule(module_path=r".*", weight_qtype="int8")]
  static = mode == "w8a8_static"
  return [qwix.QuantizationRule(module_path=r".*", weight_qtype="int8", act_qtype="int8",
                                act_static_scale=static)]


def float_model(task):
  """The task's model for quantization: with conv_impl='xla' where it has that setting
  (nn.Conv: same parameters; module docstring)."""
  from practice_jax import models
  settings = {k: v for k, v in task.config.model.items() if k != "name"}
  if "conv_impl" in settings:
    settings["conv_impl"] = "xla"
  # The float model qwix rewrites is a Linen module: float32 compute (a bfloat16-trained
  # run's parameters are float32 all the same; models/precision.py).
  settings.update(dtype="float32", param_dtype="float32")
  return models.build(task.config.model.name, task.num_classes, **settings)


def qwix_quantize(task, state, mode: str, calibration: np.ndarray | None = None
                  ) -> tuple[Callable, Any]:
  """(jitted uint8 images -> logits, quantized parameters) of the task's model under qwix
  PTQ in `mode`; `calibration` (uint8 images) sets the static activation scales."""
  if not qwix_available():
    from practice_jax.errors import UserError
    raise UserError(QWIX_MISSING)
  import qwix
  if mode not in QWIX_MODES:
    raise ValueError(f"mode {mode!r}: use one of {QWIX_MODES}")
  model = qwix.quantize_model(float_model(task), qwix.PtqProvider(rules(mode)))
  model_state = jax.device_get(state.model_state)
  sample = jnp.zeros((1,) + tuple(task.image_shape), jnp.float32)
  abstract = jax.eval_shape(lambda k: model.init(k, sample, train=False),
                            jax.random.key(0))["params"]
  params = qwix.quantize_params(jax.tree.map(jnp.asarray, plain_params(task, state)),
                                 abstract)
  if mode == "w8a8_static":
    if calibration is None:
      raise ValueError("w8a8_static needs calibration images")
    # The activation scales are parameters qwix creates on first use, from the batch it
    # sees: run the quantized model once on the calibration images, 'params' mutable.
    _, created = model.apply({"params": params, **model_state},
                             task.preprocess(jnp.asarray(calibration)), train=False,
                             mutable=["params"], rngs={"params": jax.random.key(0)})
    params = created["params"]

  @jax.jit
  def logits(qparams, images):
    return model.apply({"params": qparams, **model_state}, task.preprocess(images),
                       train=False)
  return (lambda images: logits(params, images)), params


def plain_params(task, state) -> Any:
  """The state's parameters on the host, LoRA adapters (if any) merged into their
  kernels: what is quantized."""
  from practice_jax import lora
  return lora.merge(jax.device_get(state.params), task.config)


def float_logits(task, state, params: Any | None = None) -> Callable:
  """Jitted uint8 images -> logits of the task's model in float32 (a quantization-aware
  task's ``plain_model``) with `params` (default: the state's, `plain_params`)."""
  model_state = jax.device_get(state.model_state)
  params = plain_params(task, state) if params is None else params
  model = getattr(task, "plain_model", task.model)   # a QAT task's model in float

  @jax.jit
  def logits(p, images):
    return model.apply({"params": p, **model_state}, task.preprocess(images),
                            train=False)
  return lambda images: logits(params, images)


def predict_split(fn: Callable, images: np.ndarray, batch_size: int) -> np.ndarray:
  """`fn` over `images` in batches (the last one padded), as one float32 array."""
  n = len(images)
  out = []
  for i in range(0, n, batch_size):
    batch = images[i:i + batch_size]
    pad = batch_size - len(batch)
    if pad:
      batch = np.concatenate([batch, np.zeros((pad,) + batch.shape[1:], batch.dtype)])
    out.append(np.asarray(fn(batch))[:batch_size - pad])
  return np.concatenate(out)
