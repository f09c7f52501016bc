"""A drop-in `flax.linen.Conv` (2-D, NHWC) with a choice of lowering, and fast 2x2 pools.

XLA:CPU (jax 0.10) hands every NHWC f32 2-D convolution with more than 16 channels to
YNNPACK (kernel gradients included), which is slow on the 2-vCPU EPYC this was measured
on; so is the gradient of `nn.max_pool` (select-and-scatter). Medians, ms, for conv2 of
the PyTorch-examples MNIST CNN (batch 128, 26x26x32 -> 24x24x64, 2.7 GFLOP a pass):

  impl      forward  input grad  kernel grad
  xla         46-52         9-11       55-62   (the input grad is not given to YNNPACK)
  eigen        9-12         9-11       13-19
  im2col         52           35          60   (building the 85 MB of patches: 48)

and forward + both gradients of ResNet-shaped convs (batch 128, 32x32x64): 3x3 SAME
278 / 153 / 258 ms (xla / eigen / im2col), 3x3 stride 2 -> 128: 150 / 104 / 105,
1x1 stride 2 -> 128: 68 / 18 / 17.

- ``"auto"`` (the models' default): on GPU and TPU "xla", XLA's native convolutions
  being the fast path there; on CPU, per convolution, whichever applicable lowering is
  fastest for its shape on this machine, measured the first time the shape is traced and
  cached on disk (practice_jax/autotune.py; ``python -m practice_jax.autotune show``
  prints the choices), and likewise the max-pool
  gradient (not while a model is initialized: `Module.init` runs on a sample batch). With
  ``PRACTICE_JAX_AUTOTUNE=0`` (and under pytest) the hand-set rule `_auto`
  (thresholds measured on one EPYC) and the fast max-pool gradient below are used.
- ``"xla"``: `lax.conv_general_dilated`, what `nn.Conv` runs (models use nn.Conv itself).
- ``"eigen"``: stride 1: pad explicitly, then convolve with kh extra zero rows at the
  bottom (sliced off again): the output is then taller than the input, which YNNPACK
  refuses (and the kernel gradient's "filter" taller than its input), so XLA's own Eigen
  kernel runs. Costs kh / output rows more FLOPs (3/24 for the MNIST CNN) and a padded
  copy of the input. (With the padding left in the window instead, Eigen's kernel
  gradient falls off a cliff: 3.1 s for the ResNet conv above.) Strided convs take the
  im2col path; convs with at most 16 channels are left as they are. A model that has its
  input laid out [C, H, W, N] as well passes it for the kernel gradient (`_eigen_conv`).
- ``"im2col"``: patches by slicing and concatenating, then one matmul. Memory bound here
  (about 8 GB/s for a streaming pass), but it has no convolution op, and XLA:CPU runs
  convolutions inside a while loop (`lax.scan`) about 70x slower (MNIST CNN train chunk:
  0.3 steps/s vs 20.6 unrolled with "eigen"); im2col runs as fast in a scan as unrolled
  (17.3 steps/s both).

Pools for impl != "xla": `max_pool` has a custom gradient (4.0 ms vs nn.max_pool's 52 ms
for relu + pool of [128, 24, 24, 64], forward and backward).

Avoiding YNNPACK for every convolution, without the extra rows, is a compiler option:
``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`` before jax
starts, or per program ``NO_YNN_CONVOLUTIONS`` below (MNIST CNN train step with impl
"xla": 6.2 -> 12.1 steps/s, the rest being nn.max_pool's gradient). The CPU train chunk
(parallel.py) does that when all of the step's convolutions took "eigen" or "im2col":
traced under `no_ynn_convolutions`, the eigen convolutions drop their extra rows there
(PyTorch-examples CNN step 15.4 vs 13.9 steps/s on the 2-vCPU Xeon). Evaluation and
prediction programs keep the rows and YNNPACK.

Under ``config.model.matmul_dtype='bfloat16'`` (or 'auto' on a CPU with AMX-BF16) a
stride-1 convolution with channels in multiples of 32 runs in bfloat16 on AMX tiles
instead, whatever its impl (`_on_amx`; practice_jax/kernels: forward and both gradients
2-4x faster than Eigen's for the PyTorch-examples CNN's conv2, bench/conv_bound.py).
"""

from __future__ import annotations

import contextlib
import functools
import threading

from collections.abc import Sequence
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

CONV_IMPLS = ("auto", "xla", "eigen", "im2col")
_DIMS = ("NHWC", "HWIO", "NHWC")

# XLA:CPU's library fusions without YNNPACK's convolutions (its dots and reductions kept),
# for a program whose convolutions all took "eigen" or "im2col": see `no_ynn_convolutions`.
NO_YNN_CONVOLUTIONS = {"xla_cpu_experimental_ynn_fusion_type":
                       "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}
_tracing = threading.local()


@contextlib.contextmanager
def no_ynn_convolutions():
  """Traces what runs inside for a program compiled with NO_YNN_CONVOLUTIONS: the "eigen"
  lowering then convolves without its kh extra rows (there only to keep YNNPACK away:
  12.5% of conv2's FLOPs in the MNIST CNN; with them gone and YNNPACK off, its train
  step 15.4 vs 13.9 steps/s on the 2-vCPU Xeon). Yields {"eigen": n, "ynn": m}: the
  convolutions traced inside that took the "eigen" lowering, and those left to XLA that
  YNNPACK would take. The options fit the program only if n > 0 and m == 0 (else trace
  it again outside)."""
  saved = getattr(_tracing, "record", None)
  _tracing.record = record = {"eigen": 0, "ynn": 0}
  try:
    yield record
  finally:
    _tracing.record = saved


def _note(kind: str) -> bool:
  """Counts a convolution of `kind` for `no_ynn_convolutions`; whether it is tracing."""
  record = getattr(_tracing, "record", None)
  if record is not None:
    record[kind] += 1
  return record is not None


def check_impl(impl: str) -> str:
  """The lowering `impl` names ("auto" stays "auto" on CPU, where conv2d picks one per
  convolution, and is "xla" on GPU and TPU); a ValueError if it is not in CONV_IMPLS."""
  if impl not in CONV_IMPLS:
    raise ValueError(f"Unknown conv_impl {impl!r}: expected one of "
                     f"{', '.join(CONV_IMPLS)}.")
  if impl == "auto" and jax.default_backend() != "cpu":
    return "xla"
  return impl


def _pairs(padding: Any, in_hw: Sequence[int], kernel_hw: Sequence[int],
           strides: Sequence[int]) -> list[tuple[int, int]]:
  """Explicit (low, high) padding per spatial dimension, as nn.Conv resolves it."""
  if isinstance(padding, str):
    if padding.upper() not in ("SAME", "VALID"):
      raise ValueError(f"Unsupported padding {padding!r}: use 'SAME', 'VALID' or integers.")
    return list(lax.padtype_to_pads(in_hw, kernel_hw, strides, padding.upper()))
  if isinstance(padding, int):
    return [(padding, padding)] * len(kernel_hw)
  return [(p, p) if isinstance(p, int) else tuple(p) for p in padding]


def _auto(cin: int, out_pixels: int, strides: Sequence[int]) -> str:
  """The hand-set lowering "auto" picks on CPU for one convolution when it does not measure
  (PRACTICE_JAX_AUTOTUNE=0, pytest, Module.init; see practice_jax/autotune.py), from
  measurements on the 2-vCPU EPYC (forward + both gradients, batch 128, ms; measured
  while the machine was also running another job, so compare within a row):
  26x26x32 -> 24x24x64 VALID: xla 162, eigen 91; 14x14x32 -> 14x14x64 SAME: xla 19,
  eigen 22; 28x28x1 -> 28x28x32 SAME: xla 25, eigen 29; strided ResNet convs: see the
  table above (im2col wins)."""
  if cin <= 16:
    return "xla"
  if tuple(strides) != (1, 1):
    return "im2col"
  return "eigen" if out_pixels > 256 else "xla"


def _autotuning(shape: Sequence) -> bool:
  """Whether "auto" measures its choice for an input of `shape` (practice_jax/autotune.py):
  on CPU, unless PRACTICE_JAX_AUTOTUNE=0 (the default under pytest), and only for concrete
  shapes (an export with a symbolic batch size takes the hand-set rule)."""
  from practice_jax import autotune
  return (jax.default_backend() == "cpu" and autotune.enabled() and not _initializing()
          and all(isinstance(d, int) for d in shape))


def _initializing() -> bool:
  """Whether the innermost Flax module is being initialized (`Module.init` traces the model
  on a sample batch whose shapes are not the training ones: nothing is measured then)."""
  try:
    from flax.linen.module import _context
    module = _context.module_stack[-1]
    return module is not None and module.is_initializing()
  except (ImportError, AttributeError, IndexError):
    return False


def _candidates(cin: int, cout: int, strides: Sequence[int]) -> tuple[str, ...]:
  """The lowerings that differ for this convolution ("eigen" is "xla" with at most 16
  channels and "im2col" when strided, see conv2d)."""
  if max(cin, cout) <= 16 or tuple(strides) != (1, 1):
    return ("xla", "im2col")
  return ("xla", "eigen", "im2col")


def conv2d(x: jnp.ndarray, kernel: jnp.ndarray, strides: Sequence[int],
           pads: Sequence[tuple[int, int]], impl: str = "xla",
           x_cnhw: jnp.ndarray | None = None) -> jnp.ndarray:
  """NHWC x HWIO -> NHWC cross-correlation with explicit padding, as lax computes it.

  `x_cnhw`, optional: the same values as x laid out [C, H, W, N] (no gradient flows
  into it); the "eigen" lowering then takes its kernel gradient from it instead of
  transposing x (see `_eigen_conv`)."""
  kh, kw, cin, cout = kernel.shape
  out_h, out_w = ((n + lo + hi - k) // s + 1 for n, (lo, hi), k, s
                  in zip(x.shape[1:3], pads, (kh, kw), strides))
  if _on_amx(x, kernel, strides, pads):
    from practice_jax import kernels
    return kernels.conv(x, kernel, tuple(tuple(p) for p in pads))
  if impl == "auto":
    impl = _auto(cin, out_h * out_w, strides)
    if _autotuning(x.shape):
      from practice_jax import autotune
      impl = autotune.conv_choice(tuple(x.shape), tuple(kernel.shape), tuple(strides),
                                  [tuple(p) for p in pads], jnp.dtype(x.dtype).name,
                                  _candidates(cin, cout, strides))
  if impl == "eigen" and max(cin, cout) > 16:     # else YNNPACK would not take it anyway
    if tuple(strides) != (1, 1):
      impl = "im2col"
    else:
      rows = 0 if _note("eigen") else kh
      if x_cnhw is not None:
        return _eigen_conv(x, x_cnhw, kernel, tuple(map(tuple, pads)), rows)
      return _eigen(x, kernel, pads, rows)
  if impl == "im2col":
    x = jnp.pad(x, [(0, 0), *pads, (0, 0)])
    sh, sw = strides
    cols = [x[:, i:i + sh * (out_h - 1) + 1:sh, j:j + sw * (out_w - 1) + 1:sw]
            for i in range(kh) for j in range(kw)]
    patches = cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)
    return (patches.reshape(-1, kh * kw * cin) @ kernel.reshape(-1, cout)).reshape(
        x.shape[0], out_h, out_w, cout)
  if max(cin, cout) > 16:
    _note("ynn")
  return lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=_DIMS)


def _on_amx(x: jnp.ndarray, kernel: jnp.ndarray, strides: Sequence[int],
            pads: Sequence[tuple[int, int]]) -> bool:
  """Whether `conv2d` runs this convolution in bfloat16 on AMX tiles (practice_jax/kernels,
  whatever its impl): under config.model.matmul_dtype='bfloat16' (or 'auto' on a CPU with
  AMX-BF16: models/precision.py), float32 in, where the kernel takes the shape (stride 1,
  channels in multiples of 32) and the machine has the tiles."""
  from practice_jax import kernels
  from practice_jax.models.precision import bfloat16_matmuls
  return (bfloat16_matmuls() and x.dtype == kernel.dtype == jnp.float32
          and kernels.applicable(x.shape, kernel.shape, strides, pads)
          and kernels.available())


def _eigen(x: jnp.ndarray, kernel: jnp.ndarray, pads, rows: int) -> jnp.ndarray:
  """Stride-1 conv through XLA's Eigen kernel: padded explicitly, `rows` zero rows more at
  the bottom (kh: YNNPACK refuses an output taller than the input; 0 in a program without
  YNNPACK's convolutions), sliced off again."""
  kh = kernel.shape[0]
  x = jnp.pad(x, [(0, 0), *pads, (0, 0)])
  y = lax.conv_general_dilated(x, kernel, (1, 1), [(0, rows), (0, 0)],
                               dimension_numbers=_DIMS)
  return y[:, :x.shape[1] - kh + 1]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _eigen_conv(x, x_cnhw, kernel, pads, rows):
  """`_eigen` whose kernel gradient reads x from `x_cnhw` ([C, H, W, N]).

  The kernel gradient is a convolution over the batch (x's channels become its batch, x's
  batch its input features), and Eigen takes that only as [C, H, W, N] input and an
  [H, W, N, C] "filter": XLA transposes x and the output gradient for it, element by
  element. A model that can cheaply compute x in that layout too (the first conv stage
  of an MNIST CNN: a 9 x 32 matmul from the transposed image) passes it here and the
  transpose of x is gone: PyTorch-examples CNN train step (bench/step_speed.py's runner)
  16.0 vs 14.4 steps/s on a 2-vCPU Xeon (medians of 5 alternating processes of 5 x 16
  steps). The output gradient's transpose moves whole rows of channels and costs less:
  producing it already transposed measured 2% at most."""
  return _eigen(x, kernel, pads, rows)


def _eigen_conv_fwd(x, x_cnhw, kernel, pads, rows):
  return _eigen(x, kernel, pads, rows), (x, x_cnhw, kernel)


def _eigen_conv_bwd(pads, rows, res, g):
  x, x_cnhw, kernel = res
  dx = jax.vjp(lambda x: _eigen(x, kernel, pads, rows), x)[1](g)[0]
  # The filter `rows` taller than the input keeps YNNPACK away, as in _eigen.
  g_hwnc = jnp.transpose(jnp.pad(g, [(0, 0), (0, rows), (0, 0), (0, 0)]), (1, 2, 0, 3))
  # Padded behind a barrier: XLA would fold the padding into the window, which sends
  # this convolution down a path 40x slower (800 ms for the MNIST config's conv2).
  padded = lax.optimization_barrier(jnp.pad(x_cnhw, [(0, 0), *pads, (0, 0)]))
  dk = lax.conv_general_dilated(padded, g_hwnc, (1, 1), [(0, rows), (0, 0)],
                                dimension_numbers=_DIMS)          # [cin, kh, kw, cout]
  return dx, jnp.zeros_like(x_cnhw), jnp.transpose(dk, (1, 2, 0, 3))


_eigen_conv.defvjp(_eigen_conv_fwd, _eigen_conv_bwd)


def layer(impl: str) -> Callable:
  """The conv module a model uses for `impl`: nn.Conv itself for "xla", else Conv."""
  impl = check_impl(impl)
  return nn.Conv if impl == "xla" else functools.partial(Conv, impl=impl)


class Conv(nn.Module):
  """2-D convolution on NHWC inputs with nn.Conv's parameters ('kernel' [kh, kw, cin,
  cout], 'bias' [cout]), initializers and auto-name ("Conv_0", ...), so parameters and
  checkpoints are interchangeable with nn.Conv's; `impl` picks the lowering."""
  features: int
  kernel_size: int | Sequence[int]
  strides: int | Sequence[int] = 1
  padding: Any = "SAME"        # "SAME", "VALID", an int, or ((lo, hi), (lo, hi))
  use_bias: bool = True
  kernel_init: Callable = nn.linear.default_kernel_init
  bias_init: Callable = nn.initializers.zeros_init()
  impl: str = "xla"

  @nn.compact
  def __call__(self, x: jnp.ndarray, x_cnhw: jnp.ndarray | None = None,
               cnhw_out: bool = False):
    """y = conv(x) + bias. With `x_cnhw` (x's values as [C, H, W, N], see conv2d) the
    "eigen" lowering's kernel gradient reads it; with `cnhw_out`, returns (y, y's values
    as [C, H, W, N] without gradient), computed by one matmul from x transposed: cheap
    for an input of few channels (an image), for the next conv's `x_cnhw`."""
    impl = check_impl(self.impl)
    ks = ((self.kernel_size,) * 2 if isinstance(self.kernel_size, int)
          else tuple(self.kernel_size))
    strides = (self.strides,) * 2 if isinstance(self.strides, int) else tuple(self.strides)
    kernel = self.param("kernel", self.kernel_init, ks + (x.shape[-1], self.features),
                        jnp.float32).astype(x.dtype)
    pads = _pairs(self.padding, x.shape[1:3], ks, strides)
    y = conv2d(x, kernel, strides, pads, impl, x_cnhw)
    bias = (self.param("bias", self.bias_init, (self.features,), jnp.float32)
            if self.use_bias else None)
    if bias is not None:
      y = y + bias
    if not cnhw_out:
      return y
    y_cnhw = _conv_cnhw(lax.stop_gradient(x), lax.stop_gradient(kernel), strides, pads)
    if bias is not None:
      y_cnhw = y_cnhw + lax.stop_gradient(bias)[:, None, None, None]
    return y, y_cnhw


def _conv_cnhw(x: jnp.ndarray, kernel: jnp.ndarray, strides: Sequence[int],
               pads: Sequence[tuple[int, int]]) -> jnp.ndarray:
  """conv2d(x, kernel) laid out [C, H, W, N]: patches of x transposed to [C, H, W, N],
  contracted with the kernel in one matmul whose output is already in that layout."""
  kh, kw, cin, cout = kernel.shape
  x = jnp.pad(jnp.transpose(x, (3, 1, 2, 0)), [(0, 0), *pads, (0, 0)])
  (sh, sw), n = strides, x.shape[-1]
  out_h, out_w = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
  cols = jnp.stack([x[:, i:i + sh * (out_h - 1) + 1:sh, j:j + sw * (out_w - 1) + 1:sw]
                    for i in range(kh) for j in range(kw)])      # [kh * kw, cin, oh, ow, n]
  y = lax.dot_general(kernel.reshape(-1, cout), cols.reshape(kh * kw * cin, -1),
                      (((0,), (0,)), ((), ())))
  return y.reshape(cout, out_h, out_w, n)


@jax.custom_vjp
def max_pool(x: jnp.ndarray) -> jnp.ndarray:
  """nn.max_pool(x, (2, 2), strides=(2, 2)), with the same gradient (to the first maximum
  of each window in row-major order) computed by comparisons instead of XLA's
  select-and-scatter: relu + pool of [128, 24, 24, 64], forward and backward, 4.0 ms
  against 52 ms (autodiff of a reshape + max, which splits ties: 9.1 ms)."""
  return _max_windows(x)


def _max_windows(x):
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def _max_pool_fwd(x):
  # The winner's index is kept for the backward pass, so every window passes its
  # gradient to exactly one input. (Comparing recomputed inputs with the stored maximum
  # can find no winner at all when XLA recomputes the input in another fusion with other
  # rounding; that lost gradients and made 1- and 8-device runs diverge.)
  v = _windows(x)
  best, index = v[:, :, 0, :, 0], jnp.zeros(v.shape[:2] + v.shape[3:4] + v.shape[5:], jnp.int8)
  for k, (i, j) in enumerate(((0, 1), (1, 0), (1, 1)), start=1):
    better = v[:, :, i, :, j] > best          # strict: ties go to the first, as nn's
    best = jnp.where(better, v[:, :, i, :, j], best)
    index = jnp.where(better, jnp.int8(k), index)
  return _max_windows(x), (index, x.shape)


def _max_pool_bwd(res, g):
  index, (n, h, w, c) = res
  rows = [jnp.stack([jnp.where(index == 2 * i + j, g, 0.0) for j in range(2)], axis=3)
          for i in range(2)]
  dx = jnp.stack(rows, axis=2).reshape(n, h // 2 * 2, w // 2 * 2, c)
  return (jnp.pad(dx, [(0, 0), (0, h % 2), (0, w % 2), (0, 0)]),)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def avg_pool(x: jnp.ndarray) -> jnp.ndarray:
  """nn.avg_pool(x, (2, 2), strides=(2, 2)) as a reshape and a mean (same speed)."""
  return _windows(x).mean(axis=(2, 4))


def _windows(x: jnp.ndarray) -> jnp.ndarray:
  """[n, h, w, c] -> [n, h/2, 2, w/2, 2, c], dropping an odd last row / column."""
  n, h, w, c = x.shape
  return x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)


def pool(kind: str, x: jnp.ndarray, impl: str) -> jnp.ndarray:
  """2x2 stride-2 "max" or "avg" pool: nn's reduce_window for impl "xla", else a reshape
  ("auto": the fast max-pool gradient, nn's average pool)."""
  if impl == "auto" and kind == "max" and _autotuning(x.shape):
    from practice_jax import autotune
    impl = autotune.max_pool_choice(tuple(x.shape), jnp.dtype(x.dtype).name)
  if impl == "xla" or (impl == "auto" and kind == "avg"):
    return (nn.max_pool if kind == "max" else nn.avg_pool)(x, (2, 2), strides=(2, 2))
  return (max_pool if kind == "max" else avg_pool)(x)
