"""Post-training int8 and int4 quantization of a trained image classifier.

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
  - ``w4a8``: Dense kernels int4 (per output channel, symmetric absmax: qwix maps
    ``max|w|`` to 7.5 and rounds into [-8, 7]), their input activations int8 dynamic;
    convolutions w8a8 dynamic (qwix 0.1.8's convolution needs one type on both sides).
  - ``w4``: Dense kernels int4, activations float; convolutions w8a8 as in ``w8``.
  - ``w2a8``: as ``w4a8`` with 2-bit Dense kernels (qwix's ``int2``: ``max|w|`` to 1.5,
    rounded into {-2, -1, 0, 1}; qwix holds them in int4 arrays, the size counts the
    2 bits a packed store needs).

  There is no ``w4a4``: an int4 x int4 product (Dense or convolution) does not compile
  on XLA:CPU ("does not support custom element sizes on non-sub-byte types"), so it is
  refused with the other unknown modes.

  The project's fast CPU convolution (models/conv.py's ``Conv``, for conv_impl other than
  'xla') casts its kernel with ``astype``, which qwix 0.1.8's quantized weights do not
  support (``flax_util.update_boxed``: "Unsupported type: QArray"); the quantized model is
  therefore built with ``conv_impl='xla'`` (``nn.Conv``, whose parameters are the same).

- **ours** (``int8_weights``, no library): weight-only, per output channel, symmetric:
  ``scale = max|w| / 127`` over all axes but the last, ``q = round(w / scale)`` in
  [-127, 127]; the model runs on the dequantized weights ``q * scale`` (what an int8
  weight store costs in accuracy, without int8 arithmetic). Every weight is within half a
  step (scale / 2) of its float value. **ours4** is the same in int4 (``max|w| / 7``, [-7,
  7]) for every kernel, convolutions included.

The size is the bytes of the parameters as stored: int8 values (one byte each), int4
values (half a byte each, two to a byte) or int2 (a quarter byte: qwix's logical type,
packed) plus float32 scales for the quantized kernels, float32 for everything else
(biases, batch-norm statistics).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

QWIX_MODES = ("w8", "w8a8", "w8a8_static", "w4a8", "w4", "w2a8")
QWIX_MISSING = ("qwix is not installed: pip install -e '.[compress]' (qwix>=0.1.8, "
                "pure Python; it resolves with the project's pins).")
KERNEL_NAMES = ("kernel",)


def qwix_available() -> bool:
  return importlib.util.find_spec("qwix") is not None


# -- ours: weight-only per-channel symmetric int8 -----------------------------------------

def quantize_int8(w: jax.Array, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
  """(int8 values, float32 scales per output channel, the last axis) of `w`; with
  ``bits=4``, int4 values in [-7, 7] (``scale = max|w| / 7``, stored as ``jnp.int4``)."""
  if bits not in (8, 4):
    raise ValueError(f"bits={bits}: 8 or 4")
  top = 2 ** (bits - 1) - 1
  w = np.asarray(w, np.float32)
  axes = tuple(range(w.ndim - 1))
  scale = np.max(np.abs(w), axis=axes, keepdims=True) / top
  scale = np.where(scale > 0, scale, 1.0).astype(np.float32)   # all-zero channels
  q = np.clip(np.round(w / scale), -top, top).astype(np.int8 if bits == 8 else jnp.int4)
  return q, scale


def dequantize_int8(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
  return q.astype(np.float32) * scale


def _is_kernel(path) -> bool:
  last = path[-1]
  return str(getattr(last, "key", last)) in KERNEL_NAMES


def int8_weights(params: Any, bits: int = 8) -> tuple[Any, Any]:
  """(quantized tree, dequantized float tree): every kernel (ndim >= 2) as {'q', 'scale'}
  (int8, or int4 with ``bits=4``) and its dequantized copy; other leaves as they are."""
  def quantize(path, p):
    if _is_kernel(path) and np.ndim(p) >= 2:
      q, scale = quantize_int8(p, bits)
      return {"q": q, "scale": scale}
    return np.asarray(p)
  quantized = jax.tree_util.tree_map_with_path(quantize, params)
  dequantized = jax.tree_util.tree_map_with_path(
      lambda path, p: dequantize_int8(**quantize(path, p)) if (
          _is_kernel(path) and np.ndim(p) >= 2) else np.asarray(p), params)
  return quantized, dequantized


def bits(dtype) -> int:
  """Bits of one value of `dtype` as stored: 4 for int4/uint4 (numpy's itemsize says 1)."""
  dtype = np.dtype(dtype)
  if dtype.kind in "iuV":
    try:
      return int(jnp.iinfo(dtype).bits)
    except ValueError:
      pass
  if dtype.kind in "fV":
    try:
      return int(jnp.finfo(dtype).bits)
    except ValueError:
      pass
  return dtype.itemsize * 8


def size_bytes(tree: Any) -> int:
  """Bytes of every array in `tree` as stored: int8 values count one byte each, int4
  values half a byte (two to a byte, each array rounded up to whole bytes); a qwix
  ``QArray`` of a narrower logical type (``'int2'``, ``'int3'``) counts its bits."""
  def nbytes(x, n_bits=None):
    x = x if hasattr(x, "dtype") else np.asarray(x)
    return -(-int(np.size(x)) * (n_bits or bits(x.dtype)) // 8)
  total = 0
  for x in jax.tree.leaves(tree, is_leaf=lambda x: hasattr(x, "qvalue")):
    if hasattr(x, "qvalue"):                          # qwix QArray: values, scale, zero point
      qtype = str(x.qtype)
      logical = int(qtype[3:]) if qtype[:3] == "int" and qtype[3:].isdigit() else None
      total += nbytes(x.qvalue, logical) + sum(
          nbytes(a) for a in (x.scale, x.zero_point) if a is not None)
    else:
      total += nbytes(x)
  return int(total)


# -- qwix -----------------------------------------------------------------------------------

def rules(mode: str) -> list:
  """qwix's quantization rules of `mode` (PTQ here, QAT in tasks/quantization_aware.py)."""
  import qwix
  if mode in ("w8", "w4", "w4a8", "w2a8"):
    # Convolutions w8a8 (qwix's convolution needs one type on both sides; int4 x int4
    # does not compile on XLA:CPU), the Dense layers as the mode says.
    dense = {"w8": ("int8", None), "w4": ("int4", None), "w4a8": ("int4", "int8"),
             "w2a8": ("int2", "int8")}[mode]
    return [qwix.QuantizationRule(module_path=r".*Conv.*", weight_qtype="int8",
                                  act_qtype="int8"),
            qwix.QuantizationRule(module_path=r".*", weight_qtype=dense[0],
                                  act_qtype=dense[1])]
  if mode not in ("w8a8", "w8a8_static"):
    raise ValueError(f"mode {mode!r}: use one of {QWIX_MODES}")
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
  # The float model qwix rewrites is a Linen module: float32 compute and matmuls (a
  # bfloat16-trained run's parameters are float32 all the same; models/precision.py),
  # the batch in one piece.
  settings.update(models.COMMON)
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
  """Jitted uint8 images -> `task.float_logits` (a quantization-aware task's network in
  float) with `params` (default: the state's, `plain_params`)."""
  state = jax.device_get(state)
  params = plain_params(task, state) if params is None else params
  logits = jax.jit(lambda p, images: task.float_logits(state, images, p))
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
