"""Native CPU kernels, compiled on first use: a bfloat16 convolution on Intel AMX tiles.

XLA:CPU (jaxlib 0.10) runs an f32 stride-1 convolution on Eigen at about 55% of this
machine's f32 matmul rate, and has no faster one to offer: its bfloat16 convolutions are
not sent to AMX, and building a patch matrix in XLA for a bfloat16 matmul runs at 1.4-5
GB/s (bench/conv_bound.py). `amx_conv.cc` is an implicit GEMM on AMX tiles (no patch
matrix: 16 output pixels of one kernel tap are 16 consecutive padded input pixels) for
the forward pass and the kernel gradient; the input gradient is the same forward kernel
on the padded output gradient with the flipped kernel. Inputs are rounded to bfloat16 and
products accumulated in float32, as `config.model.matmul_dtype='bfloat16'` does for
matmuls (models/precision.py): models/conv.py uses it only under that policy. The casts to
bfloat16 are XLA's, fused into the ops that produce the operands.

Measured on the 2-vCPU Intel Xeon (AMX-BF16), 2026-12-03, conv2 of the PyTorch-examples
CNN (batch 128, 26x26x32 -> 24x24x64): forward 4.3 ms against Eigen's 13.6, forward and
both gradients 13 ms against ~41-52 (medians of 9 alternating rounds, with the first
version, which cast to bfloat16 inside the calls; `python bench/conv_bound.py`, with XLA's
casts as passes of their own: 20.6 ms against 45.2). The CNN's train step
(bench/step_speed.py --matmul_dtype float32,bfloat16): the README's Speed section.

The library is built from `amx_conv.cc` with the machine's C++ compiler (``$CXX`` or
c++/g++; -O3 -march=native, against jaxlib's XLA FFI headers) into
``~/.cache/practice_jax/kernels`` (``$PRACTICE_JAX_KERNEL_CACHE``), keyed by the source,
the jax and jaxlib versions, the compiler's version and the CPU (about 2 s, once), and
registered as XLA FFI targets; the calls share their work out on XLA's intra-op thread
pool. `available()` says whether the AMX kernels can run here: an x86 CPU with AMX-BF16,
a compiler that targets it, and Linux granting the tile state. With ``emulate=True`` the
same code runs on plain C++ tiles on any machine with a compiler (slow; the tests check
the indexing that way).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "amx_conv.cc")
_TARGETS = ("pj_amx_conv", "pj_amx_conv_kernel_grad")


def cache_dir() -> str:
  return os.environ.get("PRACTICE_JAX_KERNEL_CACHE") or os.path.join(
      os.path.expanduser("~"), ".cache", "practice_jax", "kernels")


def _compiler() -> str | None:
  for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
    if name and shutil.which(name):
      return name
  return None


@functools.lru_cache(maxsize=None)
def _library() -> ctypes.CDLL | None:
  """The compiled kernels, built here if not cached, with their FFI targets registered;
  None without a compiler or if building or loading fails (why: `_build_errors`)."""
  import jaxlib

  from practice_jax import autotune
  cxx = _compiler()
  if cxx is None:
    return None
  with open(_SOURCE, "rb") as f:
    source = f.read()
  try:
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True,
                             timeout=60).stdout
    key = hashlib.sha256("\n".join(
        [source.decode(), jax.__version__, jaxlib.__version__, version, autotune.cpu_model(),
         " ".join(sorted(autotune.cpu_flags()))]).encode()).hexdigest()[:16]
    path = os.path.join(cache_dir(), f"amx_conv-{key}.so")
    if not os.path.exists(path):
      os.makedirs(cache_dir(), exist_ok=True)
      fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache_dir())
      os.close(fd)
      try:
        cmd = [cxx, "-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w",
               f"-I{jax.ffi.include_dir()}", _SOURCE, "-o", tmp, "-lpthread"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if done.returncode:
          _build_errors.append(f"{' '.join(cmd)} failed: {done.stderr.strip()[-2000:]}")
          return None
        os.chmod(tmp, 0o755)                # mkstemp's 0600 would hide it from other users
        os.replace(tmp, path)               # atomic: a concurrent build wins or loses whole
      finally:
        if os.path.exists(tmp):
          os.unlink(tmp)
    lib = ctypes.cdll.LoadLibrary(path)
  except (OSError, subprocess.SubprocessError) as e:   # no cache, no compiler run, no load
    _build_errors.append(f"building the kernels in {cache_dir()}: {e}")
    return None
  for name in _TARGETS:
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)), platform="cpu")
  return lib


_build_errors: list[str] = []


def buildable() -> bool:
  """Whether the kernels compile here (with `emulate=True` they then run anywhere)."""
  return jax.default_backend() == "cpu" and _library() is not None


@functools.lru_cache(maxsize=None)
def available() -> bool:
  """Whether the AMX kernels run here (CPU backend, AMX-BF16, built, tiles granted)."""
  from practice_jax import autotune
  if jax.default_backend() != "cpu" or "amx_bf16" not in autotune.cpu_flags():
    return False
  lib = _library()
  return lib is not None and bool(lib.pj_have_amx())


def applicable(x_shape: Sequence[int], k_shape: Sequence[int], strides: Sequence[int],
               pads: Sequence[Sequence[int]]) -> bool:
  """Whether `conv` takes this convolution: stride 1, channels in and out multiples of
  32, each padding between 0 and the kernel size - 1 (VALID, SAME and anything between),
  an output of at least one pixel."""
  kh, kw, cin, cout = k_shape
  return (len(x_shape) == 4 and tuple(strides) == (1, 1) and cin % 32 == 0
          and cout % 32 == 0 and x_shape[3] == cin
          and all(0 <= p <= k - 1 for (lo, hi), k in zip(pads, (kh, kw)) for p in (lo, hi))
          and all(n + lo + hi >= k for n, (lo, hi), k in zip(x_shape[1:3], pads, (kh, kw))))


def _attrs(pads, emulate: bool) -> dict:
  (plh, phh), (plw, phw) = pads
  return dict(plh=np.int64(plh), phh=np.int64(phh), plw=np.int64(plw), phw=np.int64(phw),
              emulate=np.int64(emulate))


def _forward(x, kernel, pads, emulate):
  """The forward custom call on bfloat16 x and kernel (float32 out)."""
  if _library() is None:
    raise RuntimeError("The AMX convolution kernels could not be built: "
                       + (_build_errors[-1] if _build_errors else "no C++ compiler found"))
  (plh, phh), (plw, phw) = pads
  kh, kw, _, cout = kernel.shape
  n, h, w, _ = x.shape
  shape = (n, h + plh + phh - kh + 1, w + plw + phw - kw + 1, cout)
  return jax.ffi.ffi_call("pj_amx_conv", jax.ShapeDtypeStruct(shape, jnp.float32))(
      x, kernel, **_attrs(pads, emulate))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv(x: jnp.ndarray, kernel: jnp.ndarray, pads: tuple, emulate: bool = False):
  """Stride-1 NHWC x HWIO -> NHWC cross-correlation with explicit `pads` ((lo, hi) per
  spatial dim), x and kernel rounded to bfloat16, float32 accumulation and result; its
  gradients likewise (the output gradient rounded to bfloat16). A ValueError for a
  convolution it does not take (`applicable`)."""
  return _conv_fwd(x, kernel, pads, emulate)[0]


# The casts to bfloat16 are XLA's (fused into the ops producing x and g where XLA can):
# the custom calls then read half the bytes, and the kernel gradient keeps x in bfloat16.
def _conv_fwd(x, kernel, pads, emulate):
  if not applicable(x.shape, kernel.shape, (1, 1), pads):
    raise ValueError(f"kernels.conv takes stride-1 convolutions with channels in multiples "
                     f"of 32 and paddings in [0, kernel size), not x {x.shape}, kernel "
                     f"{kernel.shape}, pads {pads}.")
  xb, kb = x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16)
  return _forward(xb, kb, pads, emulate), (xb, kb)


def _conv_bwd(pads, emulate, res, g):
  xb, kb = res
  gb = g.astype(jnp.bfloat16)
  kh, kw = kb.shape[:2]
  flipped = jnp.transpose(jnp.flip(kb, (0, 1)), (0, 1, 3, 2))
  (plh, phh), (plw, phw) = pads
  dx = _forward(gb, flipped, ((kh - 1 - plh, kh - 1 - phh), (kw - 1 - plw, kw - 1 - phw)),
                emulate)
  dk = jax.ffi.ffi_call("pj_amx_conv_kernel_grad",
                        jax.ShapeDtypeStruct(kb.shape, jnp.float32))(
      xb, gb, **_attrs(pads, emulate))
  return dx, dk


conv.defvjp(_conv_fwd, _conv_bwd)
