"""Mixed precision for every registered model: ``config.model.dtype`` / ``param_dtype``.

A policy around a Linen module's ``init`` and ``apply`` (the way DeepMind's jmp does it
for Haiku, and what Flax's per-layer ``dtype``/``param_dtype`` amount to):

- the parameters are created and kept in ``param_dtype`` (float32 by default, so the
  optimizer state is float32 too);
- ``apply`` casts the floating parameters and inputs to ``dtype`` (e.g. bfloat16): every
  matmul and convolution runs in it, and the gradients flow back through the casts to
  the ``param_dtype`` parameters;
- the outputs come back as float32, so losses, softmaxes of the loss and metrics are
  computed in float32. Flax's normalisation layers compute their statistics in float32
  whatever the input dtype, and batch-norm running statistics (not parameters) stay
  float32.

``config.model.matmul_dtype='bfloat16'`` is the narrower policy: only the matmuls of the
model's ``nn.Dense`` layers (MLPs, attention projections, heads; and a tied output layer,
``nn.Embed.attend``) take bfloat16 inputs and accumulate in float32 (forward and both
gradients: `bfloat16_matmul`), and those of layers that do their own matmuls and ask
`bfloat16_matmuls()` (the fused LSTM's outside its time loops, models/rnn.py; and the
stride-1 convolutions of `models/conv.Conv` with channels in multiples of 32 on a CPU with
AMX, which practice_jax/kernels runs as bfloat16 on its tiles), while everything else
(activations, normalisation, softmax, attention's einsums, other convolutions, the LSTM's
recurrent step) stays float32, like TF32 on NVIDIA GPUs. It pays on CPUs with
bfloat16 matrix units (Intel AMX: ~2.5x per matmul for the GPT's shapes), where XLA:CPU's
bfloat16 elementwise ops make ``dtype='bfloat16'`` slower than float32. Off by default:
where bfloat16 is emulated (the AMD EPYC without AVX512_BF16, where ``dtype='bfloat16'``
ran at half speed) it is expected to cost instead (not measured there).

``matmul_dtype='auto'`` is bfloat16 on a CPU with bfloat16 matrix units (AMX-BF16 in
/proc/cpuinfo's flags, where it was measured: the GPT's step 1.25-1.30x) and float32
everywhere else (CPUs without them, where bfloat16 is emulated; GPUs and TPUs: not
measured). It is decided by the machine's features rather than by timing each matmul
alone, as autotune does convolutions: timed alone, with its casts and transposes, a
[1024, 128] x [128, 384] matmul and its gradients took as long in bfloat16 as in float32
(1.25 vs 1.28 ms), while inside the compiled GPT step the same change made the whole step
1.25x faster. Like autotune's choices it is off (float32) under pytest and with
``PRACTICE_JAX_AUTOTUNE=0``, so that tests compute the same on every machine. A config
should only ask for it where its accuracy table shows bfloat16 matmuls lose nothing
(configs/shakespeare_gpt_cpu.py).

float16 is refused: it needs loss scaling, which this does not do; bfloat16 has float32's
range and needs none. With every dtype float32 (the default) ``wrap`` returns the module
itself, so nothing changes for a run that does not ask for it.
"""

from __future__ import annotations

import contextlib
import contextvars

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

DTYPES = ("float32", "bfloat16")
MATMUL_DTYPES = DTYPES + ("auto",)
# config.model keys every registered model accepts (besides its own fields).
DEFAULTS = {"dtype": "float32", "param_dtype": "float32", "matmul_dtype": "float32"}


def check(settings: dict) -> str | None:
  for key in DEFAULTS:
    value = settings.get(key, DEFAULTS[key])
    allowed = MATMUL_DTYPES if key == "matmul_dtype" else DTYPES
    if value not in allowed:
      extra = (" (float16 needs loss scaling, which practice_jax does not do; bfloat16 "
               "has float32's range and needs none)" if value == "float16" else "")
      return (f"config.model.{key}={value!r} is not one of {', '.join(allowed)}{extra}.")
  return None


@jax.custom_vjp
def bfloat16_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """x [..., k] @ kernel [k, n] with bfloat16 inputs accumulated in float32 (float32 out);
  its gradients are bfloat16 x bfloat16 -> float32 matmuls too."""
  return _bfloat16_matmul_fwd(x, kernel)[0]


def bfloat16_dot(a: jax.Array, b: jax.Array) -> jax.Array:
  """a @ b with bfloat16 inputs, accumulated in float32 (float32 out)."""
  return jnp.matmul(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16),
                    preferred_element_type=jnp.float32)


def bfloat16_gram(x: jax.Array, g: jax.Array) -> jax.Array:
  """xᵀ g for x [..., k] and g [..., n] (all leading axes contracted: a kernel's
  gradient) as a bfloat16 matmul accumulated in float32.

  XLA:CPU keeps a transpose as a column-major view, and a bfloat16 matmul with a
  column-major operand is converted to float32 (both operands, and g's rounding to
  bfloat16 dropped) before XLA decides where it runs. So xᵀ is written out row-major:
  flattened (which needs the data moved) behind a barrier that keeps XLA from folding it
  back, then viewed as [k, rows]; and the product goes through a barrier too, or XLA
  folds a later transpose of it (a tied head's [vocab, width]) into the matmul, which
  then lands on a kernel that cannot run bfloat16 ("Unsupported element type for
  DotThunk::Execute"). On the Intel Xeon machine kind (AMX) the char GPT's step ran
  67.3 vs 57.8 steps/s with it (AdamW, medians of 7 alternating rounds in one process)."""
  k = x.shape[-1]
  xt = jax.lax.optimization_barrier(x.astype(jnp.bfloat16).reshape(-1, k).T.reshape(-1))
  return jax.lax.optimization_barrier(
      bfloat16_dot(xt.reshape(k, -1), g.reshape(-1, g.shape[-1])))


def _bfloat16_matmul_fwd(x, kernel):
  xb, kb = x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16)
  return bfloat16_dot(xb, kb), (xb, kb)


def _bfloat16_matmul_bwd(residuals, g):
  xb, kb = residuals
  gb = g.astype(jnp.bfloat16)
  return bfloat16_dot(gb, kb.T), bfloat16_gram(xb, gb)


bfloat16_matmul.defvjp(_bfloat16_matmul_fwd, _bfloat16_matmul_bwd)


_BFLOAT16_MATMULS = contextvars.ContextVar("bfloat16_matmuls", default=False)


def bfloat16_matmuls() -> bool:
  """Whether the model being traced runs its matmuls in bfloat16 (matmul_dtype, module
  docstring): for layers that do their own matmuls (models/rnn.py's fused LSTM)."""
  return _BFLOAT16_MATMULS.get()


def resolve_matmul_dtype(matmul_dtype: str) -> str:
  """'auto' as this machine's choice (module docstring); other values as they are."""
  if matmul_dtype != "auto":
    return matmul_dtype
  from practice_jax import autotune
  return ("bfloat16" if autotune.enabled() and jax.default_backend() == "cpu"
          and "amx_bf16" in autotune.cpu_flags() else "float32")


def _dense_in_bfloat16(next_fun, args, kwargs, context):
  """A Flax method interceptor: float32 calls of a plain ``nn.Dense`` (and an
  ``nn.Embed``'s ``attend``, a tied output layer) as `bfloat16_matmul`; every other call,
  and layers with their own dtype or dot_general, as they are."""
  layer, method = context.module, context.method_name
  if (type(layer) not in (nn.Dense, nn.Embed) or len(args) != 1 or kwargs
      or layer.dtype is not None or layer.is_initializing()
      or getattr(args[0], "dtype", None) != jnp.float32):
    return next_fun(*args, **kwargs)
  if (type(layer) is nn.Dense and method == "__call__" and layer.dot_general is None
      and layer.dot_general_cls is None):
    kernel = layer.get_variable("params", "kernel")
    if kernel.dtype == jnp.float32:
      y = bfloat16_matmul(args[0], kernel)
      return y + layer.get_variable("params", "bias") if layer.use_bias else y
  if type(layer) is nn.Embed and method == "attend":
    embedding = layer.get_variable("params", "embedding")
    if embedding.dtype == jnp.float32:
      return bfloat16_matmul(args[0], embedding.T)
  return next_fun(*args, **kwargs)


def cast_floating(tree: Any, dtype) -> Any:
  """`tree` with every floating array cast to `dtype` (integers, keys and others kept)."""
  def cast(x):
    if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != dtype:
      return jnp.asarray(x).astype(dtype)
    return x
  return jax.tree.map(cast, tree)


class MixedPrecision:
  """`module` run in `dtype` with parameters kept in `param_dtype` (module docstring).

  It has the module's ``init`` and ``apply`` (same arguments, same variable paths) and
  passes every other attribute through to the module."""

  def __init__(self, module: nn.Module, dtype: str, param_dtype: str,
               matmul_dtype: str = "float32"):
    self.module = module
    self.dtype = jnp.dtype(dtype)
    self.param_dtype = jnp.dtype(param_dtype)
    self.matmul_dtype = matmul_dtype

  def __getattr__(self, name: str) -> Any:
    return getattr(self.module, name)

  def init(self, rngs, *args, **kwargs):
    variables = dict(self.module.init(rngs, *args, **kwargs))
    if "params" in variables:
      variables["params"] = cast_floating(variables["params"], self.param_dtype)
    return variables

  def apply(self, variables, *args, **kwargs):
    variables = dict(variables)
    if "params" in variables:
      variables["params"] = cast_floating(variables["params"], self.dtype)
    args = cast_floating(args, self.dtype)
    bfloat16 = self.matmul_dtype == "bfloat16"
    token = _BFLOAT16_MATMULS.set(bfloat16)
    try:
      with (nn.intercept_methods(_dense_in_bfloat16) if bfloat16
            else contextlib.nullcontext()):
        out = self.module.apply(variables, *args, **kwargs)
    finally:
      _BFLOAT16_MATMULS.reset(token)
    return cast_floating(out, jnp.float32)


def wrap(module: nn.Module, dtype: str = "float32", param_dtype: str = "float32",
         matmul_dtype: str = "float32"):
  """`module` itself for float32 throughout, else it under the MixedPrecision policy
  (matmul_dtype 'auto' resolved for this machine here)."""
  matmul_dtype = resolve_matmul_dtype(matmul_dtype)
  if dtype == param_dtype == matmul_dtype == "float32":
    return module
  return MixedPrecision(module, dtype, param_dtype, matmul_dtype)
