"""Export a trained image classifier to run without this code base:

    python -m practice_jax.export --workdir=runs/mnist --format=stablehlo
    python -m practice_jax.export --workdir=runs/mnist --format=savedmodel,tflite,onnx --out=DIR

Every artifact takes raw uint8 images, NHWC, of the model's size (MNIST: [batch, 28, 28,
1], values 0-255) with any batch size, and returns the logits [batch, num_classes]
(softmax gives the class probabilities): the run's preprocessing (its training set's
channel statistics) is inside the exported function. The parameters are constants in it.

- ``stablehlo``: ``model.stablehlo``, a ``jax.export`` serialized module with a symbolic
  batch dimension, lowered for ``--platforms`` (default cpu, cuda and tpu) and for one
  device, so it can be called on any device count (JAX partitions the batch when its
  input is sharded). Reload it with ``jax.export.deserialize(open(f, 'rb').read()).call``.
- ``savedmodel``: ``saved_model/``, a TensorFlow SavedModel made by ``jax2tf`` (its
  ``serving_default`` signature takes ``images`` and returns ``logits``).
- ``tflite``: ``model.tflite``, a SavedModel (lowered for CPU) of
  `convertible_function` converted by ``tf.lite.TFLiteConverter`` (float32 weights, no
  quantisation). `convertible_function` computes the same logits with ops that the TF
  Lite converter and tf2onnx take: the network built with ``conv_impl='xla'`` (same
  parameters) and nn.avg_pool's window sums as depthwise convolutions.
- ``tflite_int8``: ``model_int8.tflite``, the same SavedModel converted with full-integer
  post-training quantization (``tf.lite.Optimize.DEFAULT``, a representative dataset of
  ``--representative_examples`` training images calibrating every activation's range,
  ``TFLITE_BUILTINS_INT8`` ops only: int8 weights, per channel, and int8 activations, run
  by the interpreter's int8 kernels). Its input stays the raw uint8 image and its output
  float32 logits (the quantize and dequantize steps are inside), for one image at a
  time (batch 1: with a symbolic batch the int8 model converts too, but its shape
  arithmetic stays in int32 and float ops around the int8 kernels, and it ran 10x
  slower a call on a small CNN (0.153 vs 0.014 ms); the runner here loops over a
  batch, and one image is the usual shape on a device anyway). An int8 model does not
  reproduce the float logits, so its check is an agreement threshold instead of the
  tolerance: top-1 the same as the JAX model's on at least ``--int8_agreement`` of the
  examples (default 0.99).
- ``onnx``: ``model.onnx``, the float TF Lite model converted by ``tf2onnx`` (opset 17):
  convolutions, pools and matrix products as ONNX's own ops. tf2onnx cannot read the SavedModel
  itself (jax2tf writes the model as one XlaCallModule op, which it does not convert),
  nor a TF Lite STABLEHLO_REDUCE_WINDOW (what the converter makes of nn.avg_pool with a
  symbolic batch; `convertible_function` avoids it), and is not a dependency of the
  project: install it with ``pip install -e '.[onnx]'`` (tf2onnx and onnxruntime; they
  resolve with the project's pins).
- ``onnx_int8``: ``model_int8.onnx``, the ONNX model quantized by ONNX Runtime's own
  static post-training quantization (``onnxruntime.quantization.quantize_static``, after
  its ``quant_pre_process``): QDQ format, int8 weights per channel and int8 activations
  whose ranges the same ``--representative_examples`` training images calibrate (MinMax).
  It takes any batch size, like the float model; its check is tflite_int8's agreement
  threshold.

Beside each artifact, ``ARTIFACT.json`` says what it takes and returns, the class names,
and the parity check's result: unless ``--check=false``, each artifact is run in its own
runtime (JAX, TensorFlow, the TF Lite interpreter, ONNX Runtime) on the run's test split
(``--check_examples`` of it; 0: all) and compared with the JAX model: the top-1 class
must agree on every example and the logits within ``--tolerance`` (absolute), else the
command fails. ``--latency`` also times batch-1 calls in each runtime.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable

import numpy as np
from absl import app, flags, logging

from practice_jax import quiet
from practice_jax.errors import UserError

FORMATS = ("stablehlo", "savedmodel", "tflite", "tflite_int8", "onnx", "onnx_int8")
INT8_FORMATS = ("tflite_int8", "onnx_int8")   # checked by top-1 agreement, see `parity`
TFLITE_FORMATS = ("tflite", "tflite_int8")
ONNX_FORMATS = ("onnx", "onnx_int8")           # converted from the TF Lite model
# Made from `convertible_function` (the network built for the TF Lite converter).
CONVERTED_FORMATS = TFLITE_FORMATS + ONNX_FORMATS
# Made from the float TF Lite model (tflite_int8 is converted on its own, at batch 1).
FROM_FLOAT_TFLITE = ("tflite",) + ONNX_FORMATS
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")       # jax.export's names
ARTIFACTS = {"stablehlo": "model.stablehlo", "savedmodel": "saved_model",
             "tflite": "model.tflite", "tflite_int8": "model_int8.tflite",
             "onnx": "model.onnx", "onnx_int8": "model_int8.onnx"}
RUNTIMES = {"stablehlo": "JAX (jax.export)", "savedmodel": "TensorFlow",
            "tflite": "TF Lite interpreter", "tflite_int8": "TF Lite interpreter (int8)",
            "onnx": "ONNX Runtime", "onnx_int8": "ONNX Runtime (int8)"}
ONNX_OPSET = 17
ONNX_MISSING = ("--format=onnx and onnx_int8 need tf2onnx and onnxruntime, which are not installed: "
                "pip install -e '.[onnx]' (they resolve with the project's pins).")

# -- what is exported ------------------------------------------------------------------

def check_classifier(exp, workdir: str) -> None:
  """A UserError unless the run is an image classifier."""
  from practice_jax import tasks
  from practice_jax.tasks.classification import ClassificationTask
  task = tasks.get(exp.config.task.name)
  image_classifier = (issubclass(task, ClassificationTask) and task.INPUT == "image"
                      and exp.config.data.name != "csv")
  if not image_classifier:   # a distilled student is an image classifier too
    kind = "table" if exp.config.data.name == "csv" else exp.config.task.name
    raise UserError(f"{workdir} holds a {kind} run; export takes image classifiers "
                    f"(task 'classification' on images, or a distilled student) only.")


def logits_function(exp, state) -> Callable:
  """uint8 images [batch, H, W, C] -> float32 logits, the parameters as constants (a
  quantization-aware run's network in float: its int8 form is tflite_int8's)."""
  import jax
  host_state = jax.device_get(state)
  return lambda images: exp.task.float_logits(host_state, images)


def convertible_function(exp, state) -> Callable:
  """The function the TF Lite route converts (tflite, tflite_int8, and onnx, which is
  converted from the TF Lite model): `logits_function`'s logits, computed with ops that
  the TF Lite converter and tf2onnx both take. Two changes, neither in the parameters:

  - The network is built with ``conv_impl='xla'`` where it has that setting
    (``quantize.float_model``: nn.Conv and nn's pools, the same parameters). The other
    lowerings slice with a symbolic batch size, which lowers to a dynamic gather that the
    TF Lite converter refuses ("'vhlo.dynamic_gather_v1' op is not part of the vhlo
    support yet").
  - Every window sum (``reduce_window`` with add: nn.avg_pool's) runs as a depthwise
    convolution with a kernel of ones (`without_window_sums`). With a symbolic batch
    size the TF Lite converter keeps a window sum as STABLEHLO_REDUCE_WINDOW, an op that
    tf2onnx 1.17 cannot convert and the int8 pass refuses; a depthwise convolution is
    DEPTHWISE_CONV_2D in TF Lite (run by XNNPACK, in int8 too) and a grouped Conv in ONNX.
    Window maxima (nn.max_pool) need nothing: they become MAX_POOL_2D.
  """
  import jax

  from practice_jax import quantize
  host_state = jax.device_get(state)
  network = quantize.float_model(exp.task)
  return without_window_sums(
      lambda images: exp.task.float_logits(host_state, images, network=network))


_INLINED = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr",
            "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr"}


def without_window_sums(fn: Callable) -> Callable:
  """`fn` (one array in, one out) with each float window sum over the spatial dimensions
  of an NHWC array (``lax.reduce_window`` with add, what nn.avg_pool computes before it
  divides) replaced by the same sum as a depthwise convolution with a kernel of ones
  (same windows, strides, padding and dilations; the sum's order may differ in the last
  bit). Everything else runs as it is; calls (jit) and custom derivatives are inlined
  (this is for inference: their gradient rules are dropped). `fn` is traced again at
  each call's shapes (a symbolic batch size stays symbolic)."""
  import jax

  def wrapped(images):
    closed = jax.make_jaxpr(fn)(jax.ShapeDtypeStruct(images.shape, images.dtype))
    out, = _evaluate(closed.jaxpr, closed.consts, [images])
    return out
  return wrapped


def _evaluate(jaxpr, consts, args) -> list:
  """`jaxpr` evaluated on `args`, its window sums as depthwise convolutions."""
  from jax.extend import core
  env = {}

  def read(v):
    return v.val if isinstance(v, core.Literal) else env[v]
  env.update(zip(jaxpr.constvars, consts))
  env.update(zip(jaxpr.invars, args))
  for eqn in jaxpr.eqns:
    values = [read(v) for v in eqn.invars]
    name = eqn.primitive.name
    inner = eqn.params.get(_INLINED.get(name, ""))
    summed = (_depthwise_window_sum(values[0], **eqn.params)
              if name == "reduce_window_sum" else None)
    if summed is not None:
      outs = [summed]
    elif isinstance(inner, core.ClosedJaxpr):
      # custom_vjp_call passes its consts first (num_consts), as call_jaxpr takes them.
      outs = _evaluate(inner.jaxpr, inner.consts, values)
    else:
      outs = eqn.primitive.bind(*values, **eqn.primitive.get_bind_params(eqn.params))
      if not eqn.primitive.multiple_results:
        outs = [outs]
    env.update(zip(eqn.outvars, outs))
  return [read(v) for v in jaxpr.outvars]


def _depthwise_window_sum(x, window_dimensions, window_strides, padding, base_dilation,
                          window_dilation):
  """reduce_window_sum of NHWC `x` over (H, W) windows as a depthwise convolution, or
  None where it is not one (another rank or layout, a non-float or unknown channel
  count)."""
  import jax.numpy as jnp
  from jax import lax
  spatial_only = all(
      window_dimensions[i] == 1 and window_strides[i] == 1 and tuple(padding[i]) == (0, 0)
      and base_dilation[i] == 1 and window_dilation[i] == 1 for i in (0, 3))
  if (x.ndim != 4 or not spatial_only or not jnp.issubdtype(x.dtype, jnp.floating)
      or not isinstance(x.shape[3], int)):
    return None
  channels = x.shape[3]
  ones = jnp.ones(tuple(window_dimensions[1:3]) + (1, channels), x.dtype)
  return lax.conv_general_dilated(
      x, ones, tuple(window_strides[1:3]), [tuple(p) for p in padding[1:3]],
      lhs_dilation=tuple(base_dilation[1:3]), rhs_dilation=tuple(window_dilation[1:3]),
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=channels)


def metadata(exp, fmt: str, artifact: str, workdir: str, step: int) -> dict:
  import jax
  height, width, channels = exp.task.image_shape
  return {
      "format": fmt, "artifact": os.path.basename(artifact), "runtime": RUNTIMES[fmt],
      "workdir": os.path.abspath(workdir), "step": int(step),
      "dataset": exp.config.data.name, "model": exp.config.model.name,
      "input": {"name": "images", "dtype": "uint8", "shape": [None, height, width, channels],
                "layout": "NHWC", "range": [0, 255],
                "preprocessing": "inside the artifact (the run's channel statistics)"},
      "output": {"name": "logits", "dtype": "float32",
                 "shape": [None, len(exp.task.class_names)],
                 "note": "softmax over the last axis gives the class probabilities"},
      "class_names": list(exp.task.class_names),
      "jax_version": jax.__version__,
  }


# -- writing each format ---------------------------------------------------------------

def export_stablehlo(fn: Callable, shape, path: str,
                     platforms=("cpu", "cuda", "tpu")) -> None:
  import jax
  import jax.numpy as jnp
  batch, = jax.export.symbolic_shape("batch")
  exported = jax.export.export(jax.jit(fn), platforms=tuple(platforms))(
      jax.ShapeDtypeStruct((batch,) + tuple(shape), jnp.uint8))
  _write_bytes(path, exported.serialize())


def export_savedmodel(fn: Callable, shape, path: str, platforms=("cpu",),
                      batch: int | None = None) -> None:
  """The SavedModel of `fn`, for any batch size (`batch` None) or a fixed one."""
  import tensorflow as tf
  from jax.experimental import jax2tf
  height, width, channels = shape
  polymorphic = None if batch else [f"(b, {height}, {width}, {channels})"]
  converted = jax2tf.convert(fn, polymorphic_shapes=polymorphic, with_gradient=False,
                             native_serialization_platforms=tuple(platforms))
  module = tf.Module()
  module.serve = tf.function(
      lambda images: {"logits": converted(images)}, autograph=False,
      input_signature=[tf.TensorSpec((batch,) + tuple(shape), tf.uint8, name="images")])
  tmp = path + ".tmp"
  _remove(tmp)
  tf.saved_model.save(module, tmp, signatures={"serving_default": module.serve})
  _remove(path)
  os.replace(tmp, path)


def export_tflite(saved_model: str, path: str) -> None:
  import tensorflow as tf
  converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
  _write_bytes(path, converter.convert())


def export_tflite_int8(saved_model: str, path: str, representative: np.ndarray) -> None:
  """Full-integer post-training quantization of the SavedModel (module docstring):
  `representative` (uint8 images) calibrates the activations' ranges."""
  import tensorflow as tf

  def examples():
    for image in representative:
      yield [image[None]]
  converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  converter.representative_dataset = examples
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  _write_bytes(path, converter.convert())


def onnx_available() -> bool:
  import importlib.util
  return all(importlib.util.find_spec(m) is not None for m in ("tf2onnx", "onnxruntime"))


def export_onnx(tflite: str, path: str) -> None:
  if not onnx_available():
    raise UserError(ONNX_MISSING)
  import warnings

  import tf2onnx
  tmp = path + ".tmp"
  with warnings.catch_warnings():          # its tf.lite.Interpreter's deprecation notice
    warnings.simplefilter("ignore")
    try:
      tf2onnx.convert.from_tflite(tflite, opset=ONNX_OPSET, output_path=tmp)
    except Exception as e:                 # tf2onnx says what it cannot convert
      _remove(tmp)
      message = str(e).removeprefix("make_sure failure: ").splitlines()[0]
      message = message.split(". ")[0].rstrip(".")
      raise UserError(f"tf2onnx {tf2onnx.__version__} cannot convert this model's TF Lite "
                      f"ops to ONNX ({message}); the StableHLO, SavedModel and TF Lite "
                      f"formats do not need it.") from None
  os.replace(tmp, path)


def export_onnx_int8(onnx_model: str, path: str, representative: np.ndarray,
                     batch: int = 50) -> None:
  """ONNX Runtime's static int8 quantization of `onnx_model` (module docstring):
  `representative` (uint8 images, fed `batch` at a time) calibrates the activations."""
  if not onnx_available():
    raise UserError(ONNX_MISSING)
  import onnxruntime
  from onnxruntime import quantization
  from onnxruntime.quantization.shape_inference import quant_pre_process
  name = onnxruntime.InferenceSession(
      onnx_model, providers=["CPUExecutionProvider"]).get_inputs()[0].name

  class Reader(quantization.CalibrationDataReader):
    def __init__(self):
      self.batches = iter(representative[i:i + batch]
                          for i in range(0, len(representative), batch))

    def get_next(self):
      images = next(self.batches, None)
      return None if images is None else {name: images}
  prepared, tmp = path + ".prepared", path + ".tmp"
  try:
    # Shape inference and graph optimization first (the symbolic shape inference needs
    # sympy, which the project does not need: ONNX's own inference suffices here).
    quant_pre_process(onnx_model, prepared, skip_symbolic_shape=True)
    quantization.quantize_static(
        prepared, tmp, Reader(), quant_format=quantization.QuantFormat.QDQ,
        per_channel=True, activation_type=quantization.QuantType.QInt8,
        weight_type=quantization.QuantType.QInt8)
    os.replace(tmp, path)
  finally:
    _remove(prepared)
    _remove(tmp)


def _write_bytes(path: str, data: bytes) -> None:
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def _remove(path: str) -> None:
  import shutil
  if os.path.isdir(path):
    shutil.rmtree(path)
  elif os.path.exists(path):
    os.remove(path)


def size_bytes(path: str) -> int:
  if os.path.isdir(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
  return os.path.getsize(path)


# -- running each format in its own runtime --------------------------------------------

def runner(fmt: str, path: str) -> Callable[[np.ndarray], np.ndarray]:
  """A function uint8 images -> logits (numpy) running the artifact at `path`."""
  if fmt == "stablehlo":
    import jax
    with open(path, "rb") as f:
      exported = jax.export.deserialize(bytearray(f.read()))
    call = jax.jit(exported.call)
    return lambda images: np.asarray(call(images))
  if fmt == "savedmodel":
    import tensorflow as tf
    serve = tf.saved_model.load(path).signatures["serving_default"]
    return lambda images: serve(images=tf.constant(images))["logits"].numpy()
  if fmt in TFLITE_FORMATS:
    return _tflite_runner(path)
  if fmt in ONNX_FORMATS:
    if not onnx_available():
      raise UserError(ONNX_MISSING)
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda images: session.run(None, {name: images})[0]
  raise ValueError(fmt)


def _tflite_runner(path: str) -> Callable[[np.ndarray], np.ndarray]:
  import warnings

  import tensorflow as tf
  with warnings.catch_warnings():          # tf.lite.Interpreter's deprecation notice
    warnings.simplefilter("ignore")
    interpreter = tf.lite.Interpreter(model_path=path)
  detail = interpreter.get_input_details()[0]
  source = detail["index"]
  sink = interpreter.get_output_details()[0]["index"]
  allocated = [None]
  if detail["shape_signature"][0] > 0:          # a fixed batch (tflite_int8: one image)
    size = int(detail["shape_signature"][0])
    interpreter.allocate_tensors()

    def run_fixed(images: np.ndarray) -> np.ndarray:
      out = []
      for i in range(0, len(images), size):
        interpreter.set_tensor(source, images[i:i + size])
        interpreter.invoke()
        out.append(interpreter.get_tensor(sink).copy())
      return np.concatenate(out)
    return run_fixed

  def run(images: np.ndarray) -> np.ndarray:
    if allocated[0] != images.shape:      # resize only when the batch size changes
      interpreter.resize_tensor_input(source, images.shape)
      interpreter.allocate_tensors()
      allocated[0] = images.shape
    interpreter.set_tensor(source, images)
    interpreter.invoke()
    return interpreter.get_tensor(sink).copy()
  return run


def sharded_runner(path: str) -> Callable[[np.ndarray], np.ndarray]:
  """The StableHLO artifact called with its batch split over every local device (the
  batch is padded to a multiple of the device count)."""
  import jax
  from jax.sharding import Mesh, NamedSharding, PartitionSpec
  with open(path, "rb") as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  devices = jax.devices()
  sharding = NamedSharding(Mesh(np.array(devices), ("batch",)), PartitionSpec("batch"))
  call = jax.jit(exported.call, in_shardings=sharding, out_shardings=sharding)

  def run(images: np.ndarray) -> np.ndarray:
    n = len(images)
    padded = np.concatenate([images, np.zeros((-n % len(devices),) + images.shape[1:],
                                              images.dtype)])
    return np.asarray(call(jax.device_put(padded, sharding)))[:n]
  return run


def batched(run: Callable, images: np.ndarray, batch: int = 500) -> np.ndarray:
  return np.concatenate([run(images[i:i + batch]) for i in range(0, len(images), batch)])


def parity(reference: np.ndarray, logits: np.ndarray, tolerance: float,
           min_agreement: float | None = None) -> dict:
  """How an artifact's logits compare with the JAX model's on the same images: passed
  if the top-1 agrees on every example and the logits within `tolerance`, or (a
  quantized artifact, `min_agreement` given) if the top-1 agrees on at least that
  fraction of the examples."""
  same = reference.argmax(-1) == logits.argmax(-1)
  diff = float(np.abs(reference - logits).max())
  out = {"examples": int(len(reference)), "top1_agreement": float(same.mean()),
         "top1_disagreements": int((~same).sum()), "max_abs_logit_diff": diff}
  if min_agreement is None:
    return {**out, "tolerance": tolerance, "passed": bool(same.all() and diff <= tolerance)}
  return {**out, "min_agreement": min_agreement,
          "passed": bool(same.mean() >= min_agreement)}


def latency_ms(run: Callable, images: np.ndarray, calls: int) -> float:
  """Median wall time of a batch-1 call, in milliseconds (after two warm-up calls)."""
  for i in range(2):
    run(images[i:i + 1])
  times = []
  for i in range(calls):
    x = images[i % len(images)][None]
    start = time.perf_counter()
    run(x)
    times.append(time.perf_counter() - start)
  return 1e3 * float(np.median(times))


# -- the command -----------------------------------------------------------------------

def export(exp, state, formats, out: str, workdir: str, step: int,
           platforms=("cpu", "cuda", "tpu"), representative: np.ndarray | None = None
           ) -> dict[str, str]:
  """Writes each format's artifact (and its JSON) in `out`; {format: artifact path}.
  'tflite_int8' and 'onnx_int8' need `representative`: uint8 training images that
  calibrate them."""
  int8 = [f for f in formats if f in INT8_FORMATS]
  if int8 and (representative is None or not len(representative)):
    raise UserError(f"--format={int8[0]} needs training images to calibrate the int8 "
                    f"activations, and this run has none here.")
  if set(ONNX_FORMATS) & set(formats) and not onnx_available():
    raise UserError(ONNX_MISSING)
  fn = logits_function(exp, state)
  tflite_fn = (convertible_function(exp, state)
               if set(CONVERTED_FORMATS) & set(formats) else None)
  shape = tuple(exp.task.image_shape)
  os.makedirs(out, exist_ok=True)
  paths = {fmt: os.path.join(out, ARTIFACTS[fmt]) for fmt in formats}
  # TF Lite is converted from a SavedModel of `convertible_function` lowered for CPU alone
  # (the converter takes one platform), ONNX from the TF Lite model, onnx_int8 from the
  # ONNX model; what was not asked for is written in scratch paths and removed.
  scratch_saved_model = os.path.join(out, ".saved_model_for_tflite")
  tflite = paths.get("tflite") or os.path.join(out, ".model_for_onnx.tflite")
  onnx_model = paths.get("onnx") or os.path.join(out, ".model_for_int8.onnx")
  made_onnx = False
  made_tflite = False
  scratch_made = False
  try:
    for fmt in formats:
      start = time.perf_counter()
      meta = metadata(exp, fmt, paths[fmt], workdir, step)
      if fmt == "stablehlo":
        export_stablehlo(fn, shape, paths[fmt], platforms)
        meta["platforms"] = list(platforms)
      elif fmt == "savedmodel":
        export_savedmodel(fn, shape, paths[fmt], platforms)
        meta["platforms"] = list(platforms)
      if fmt in FROM_FLOAT_TFLITE and not scratch_made:
        export_savedmodel(tflite_fn, shape, scratch_saved_model, ("cpu",))
        scratch_made = True
      if fmt in FROM_FLOAT_TFLITE and not made_tflite:
        export_tflite(scratch_saved_model, tflite)
        made_tflite = True
      if fmt == "tflite_int8":
        int8_saved_model = os.path.join(out, ".saved_model_for_int8")
        try:
          export_savedmodel(tflite_fn, shape, int8_saved_model, ("cpu",), batch=1)
          export_tflite_int8(int8_saved_model, paths[fmt], representative)
        finally:
          _remove(int8_saved_model)
        meta["quantization"] = {
            "kind": "full-integer post-training (TFLiteConverter, TFLITE_BUILTINS_INT8)",
            "representative_examples": int(len(representative))}
        meta["input"]["shape"][0] = 1
      if fmt in ONNX_FORMATS and not made_onnx:
        export_onnx(tflite, onnx_model)
        made_onnx = True
      if fmt == "onnx_int8":
        export_onnx_int8(onnx_model, paths[fmt], representative)
        meta["quantization"] = {
            "kind": "static post-training (onnxruntime.quantization.quantize_static, "
                    "QDQ, int8 weights per channel, int8 activations, MinMax)",
            "representative_examples": int(len(representative))}
      meta["size_bytes"] = size_bytes(paths[fmt])
      meta["export_seconds"] = round(time.perf_counter() - start, 2)
      write_metadata(paths[fmt], meta)
  finally:
    for scratch in (scratch_saved_model, os.path.join(out, ".model_for_onnx.tflite"),
                    os.path.join(out, ".model_for_int8.onnx")):
      _remove(scratch)
  return paths


def metadata_path(artifact: str) -> str:
  return artifact.rstrip(os.sep) + ".json"


def write_metadata(artifact: str, meta: dict) -> None:
  tmp = metadata_path(artifact) + ".tmp"
  with open(tmp, "w") as f:
    json.dump(meta, f, indent=2)
    f.write("\n")
  os.replace(tmp, metadata_path(artifact))


def check(exp, state, paths: dict[str, str], images: np.ndarray, tolerance: float,
          latency_calls: int = 0, int8_agreement: float = 0.99) -> dict[str, dict]:
  """Each artifact's parity with the JAX model on `images` (also written into its
  JSON; the int8 artifact's by `int8_agreement`, see `parity`), and with
  `latency_calls`, batch-1 latencies; {format: result}."""
  import jax
  fn = jax.jit(logits_function(exp, state))
  reference = batched(lambda x: np.asarray(fn(x)), images)
  results = {}
  for fmt, path in paths.items():
    run = runner(fmt, path)
    result = parity(reference, batched(run, images), tolerance,
                    int8_agreement if fmt in INT8_FORMATS else None)
    if fmt == "stablehlo" and jax.device_count() > 1:
      sharded = parity(reference, batched(sharded_runner(path), images), tolerance)
      result["devices"] = jax.device_count()
      result["passed_sharded"] = sharded["passed"]
      result["passed"] = result["passed"] and sharded["passed"]
    if latency_calls:
      result["latency_ms_batch1"] = latency_ms(run, images, latency_calls)
    results[fmt] = result
    with open(metadata_path(path)) as f:
      meta = json.load(f)
    meta["parity"] = {k: v for k, v in result.items() if k != "latency_ms_batch1"}
    write_metadata(path, meta)
  if latency_calls:
    results["jax"] = {"latency_ms_batch1": latency_ms(lambda x: np.asarray(fn(x)), images,
                                                      latency_calls)}
  return results


def test_images(exp, limit: int = 0) -> np.ndarray:
  """The run's test split (or its validation split if it has none), as uint8 images."""
  splits = exp.source.eval_splits
  split = splits.get("test") or splits.get("validation")
  if split is None:
    raise UserError("The run's data has no test or validation split to check the export "
                    "on; pass --check=false to export without checking.")
  images = np.asarray(split["image"])
  if images.dtype != np.uint8:
    raise UserError(f"The run's test images are {images.dtype}, not uint8; pass "
                    f"--check=false to export without checking.")
  return images[:limit] if limit else images


def representative_images(exp, limit: int) -> np.ndarray:
  """The first `limit` training images (uint8): the int8 formats' calibration set."""
  import jax
  train_split = getattr(exp.source, "train", None)
  if not train_split or "image" not in train_split:
    raise UserError("The int8 formats need the run's training images to calibrate "
                    "the int8 activations; this run's data gives none.")
  images = np.asarray(jax.device_get(train_split["image"][:limit]))
  if images.dtype != np.uint8:
    raise UserError(f"The run's training images are {images.dtype}, not uint8; "
                    f"the int8 formats take raw uint8 images.")
  return images


def define_flags() -> None:
  """The command's flags (defined only when it runs, so importing this module defines
  none and it can share a process with the other commands' modules)."""
  flags.DEFINE_string("workdir", None, "The run's workdir.", required=True)
  flags.DEFINE_list("format", ["stablehlo"],
                    f"One or more (comma-separated) of {', '.join(FORMATS)}.")
  flags.DEFINE_string("out", None, "Folder for the artifacts (default WORKDIR/export).")
  flags.DEFINE_enum("checkpoint", None, ["best", "last"],
                    "Which checkpoint (default: the one the run used).")
  flags.DEFINE_list("platforms", ["cpu", "cuda", "tpu"],
                    "Platforms the StableHLO artifact and the SavedModel are lowered for.")
  flags.DEFINE_bool("check", True, "Check each artifact against the JAX model on the "
                    "run's test split.")
  flags.DEFINE_integer("check_examples", 0, "How many test examples the check uses "
                       "(0: all).", lower_bound=0)
  flags.DEFINE_float("tolerance", 1e-3, "Largest absolute logit difference the check "
                     "accepts.", lower_bound=0.0)
  flags.DEFINE_float("int8_agreement", 0.99, "tflite_int8, onnx_int8: the fraction of "
                     "examples on which its top-1 must agree with the JAX model's.",
                     lower_bound=0.0, upper_bound=1.0)
  flags.DEFINE_integer("representative_examples", 500, "tflite_int8, onnx_int8: "
                       "training images that calibrate the int8 activations.",
                       lower_bound=1)
  flags.DEFINE_integer("latency", 0, "Time this many batch-1 calls in each runtime "
                       "(0: none).", lower_bound=0)


def parse_formats(values) -> list[str]:
  """--format's list, checked."""
  formats = list(dict.fromkeys(v.strip() for v in values if v.strip()))
  unknown = [f for f in formats if f not in FORMATS]
  if unknown or not formats:
    raise UserError(f"--format={','.join(values)}: choose one or more of "
                    f"{', '.join(FORMATS)}.")
  return formats


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    print(f"error: unexpected arguments {argv[1:]}; see --help.", file=sys.stderr)
    return 2
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  from practice_jax import train
  FLAGS = flags.FLAGS
  workdir = FLAGS.workdir
  try:
    formats = parse_formats(FLAGS.format)
    if set(ONNX_FORMATS) & set(formats) and not onnx_available():
      raise UserError(ONNX_MISSING)
    platforms = tuple(dict.fromkeys(FLAGS.platforms))
    if not platforms or set(platforms) - set(PLATFORMS):
      raise UserError(f"--platforms={','.join(FLAGS.platforms)}: choose from "
                      f"{', '.join(PLATFORMS)}.")
    if FLAGS.check and "cpu" not in platforms:
      raise UserError("The check runs the artifacts on this machine's CPU; add cpu to "
                      "--platforms or pass --check=false.")
    int8 = bool(set(INT8_FORMATS) & set(formats))
    exp, state, step, which = train.load_trained(workdir, FLAGS.checkpoint,
                                                 with_data=FLAGS.check or int8)
    check_classifier(exp, workdir)
    images = test_images(exp, FLAGS.check_examples) if FLAGS.check else None
    representative = (representative_images(exp, FLAGS.representative_examples)
                      if int8 else None)
    out = FLAGS.out or os.path.join(workdir, "export")
    paths = export(exp, state, formats, out, workdir, step, platforms, representative)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for fmt, path in paths.items():
    print(f"{fmt}: {path} ({size_bytes(path) / 1e6:.2f} MB), metadata in "
          f"{metadata_path(path)}")
  if images is None:
    return 0
  results = check(exp, state, paths, images, FLAGS.tolerance, FLAGS.latency,
                  FLAGS.int8_agreement)
  failed = []
  for fmt in paths:
    r = results[fmt]
    line = (f"{fmt} in {RUNTIMES[fmt]}: top-1 agrees on {r['examples'] - r['top1_disagreements']}"
            f"/{r['examples']} test images, max |logit difference| "
            f"{r['max_abs_logit_diff']:.2e} " + (
                f"(tolerance {r['tolerance']:g})" if "tolerance" in r else
                f"(int8: top-1 agreement {r['top1_agreement']:.2%}, at least "
                f"{r['min_agreement']:.0%} required)"))
    if "devices" in r:
      line += f", also sharded over {r['devices']} devices"
    if "latency_ms_batch1" in r:
      line += f", batch-1 latency {r['latency_ms_batch1']:.3f} ms"
    print(line + (": ok" if r["passed"] else ": FAILED"))
    if not r["passed"]:
      failed.append(fmt)
  if "jax" in results:
    print(f"JAX model (jit): batch-1 latency {results['jax']['latency_ms_batch1']:.3f} ms")
  if failed:
    print(f"error: {', '.join(failed)} differ from the JAX model beyond the tolerance "
          f"(see above).", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  quiet.install()   # before TensorFlow or XLA load; --verbosity shows their lines
  define_flags()
  app.run(main)
