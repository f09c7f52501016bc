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

float16 is refused: it needs loss scaling, which this does not do; bfloat16 has float32's
range and needs none. With both dtypes float32 (the default) ``wrap`` returns the module
itself, so nothing changes for a run that does not ask for it.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

DTYPES = ("float32", "bfloat16")
# config.model keys every registered model accepts (besides its own fields).
DEFAULTS = {"dtype": "float32", "param_dtype": "float32"}


def check(settings: dict) -> str | None:
  for key in DEFAULTS:
    value = settings.get(key, DEFAULTS[key])
    if value not in DTYPES:
      extra = (" (float16 needs loss scaling, which practice_jax does not do; bfloat16 "
               "has float32's range and needs none)" if value == "float16" else "")
      return (f"config.model.{key}={value!r} is not one of {', '.join(DTYPES)}{extra}.")
  return None


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

  def __init__(self, module: nn.Module, dtype: str, param_dtype: str):
    self.module = module
    self.dtype = jnp.dtype(dtype)
    self.param_dtype = jnp.dtype(param_dtype)

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
    out = self.module.apply(variables, *args, **kwargs)
    return cast_floating(out, jnp.float32)


def wrap(module: nn.Module, dtype: str = "float32", param_dtype: str = "float32"):
  """`module` itself for float32 throughout, else it under the MixedPrecision policy."""
  if dtype == "float32" and param_dtype == "float32":
    return module
  return MixedPrecision(module, dtype, param_dtype)
