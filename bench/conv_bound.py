"""How close XLA:CPU's kernels can bring the PyTorch-examples CNN step to Keras's on this
machine: its conv2 (batch 128, 26x26x32 -> 24x24x64, 3x3 VALID) through the kernels the
train chunk uses, and through the alternatives measured against them.

    python bench/conv_bound.py [--batch 128] [--repeats 9] [--json bench/results/conv_bound.json]

Every row is compiled as the CPU train chunk of a model whose convolutions all take "eigen"
or "im2col" is (`conv.NO_YNN_CONVOLUTIONS`: YNNPACK for dots and reductions only) and
timed as the median of `--repeats` alternating rounds after a warm-up:

- ``matmul f32`` / ``matmul bf16``: a 2048^3 matmul in float32, and in bfloat16 with
  float32 accumulation (AMX on a CPU that has it): this machine's two matmul rates.
- ``eigen fwd`` / ``eigen dx`` / ``eigen dk``: conv2's forward, input gradient and kernel
  gradient on XLA's Eigen kernel, the kernel gradient from the [C, H, W, N] copy of the
  input and the [H, W, N, C] output gradient as `models/conv.py`'s `_eigen_conv` computes
  it; ``transpose dy``: that output gradient's transpose. Their sum is what conv2 costs
  the step at best; compare it with Keras's whole step (bench/step_speed.py).
- ``amx fwd+dk``: conv2's forward and kernel gradient as two bfloat16 matmuls sharing one
  patch matrix [9 C, H' W N] built from the [C, H, W, N] input (rows of full width, the
  two extra output columns dropped), against ``eigen fwd+dk`` (forward, kernel gradient
  and transpose in one program).
- ``nine-dot dk``: the kernel gradient as nine float32 matmuls over contiguous row ranges
  of an [H, W, N, C] input, against ``eigen dk``.
- ``kernel fwd`` / ``kernel all``: where the CPU has AMX, the project's own bfloat16
  convolution on AMX tiles (practice_jax/kernels, what the step runs under
  ``model.matmul_dtype='bfloat16'``): forward, and forward with both gradients (its
  errors are bfloat16's, against float32).

The script runs itself under glibc malloc settings that keep freed memory
(``GLIBC_TUNABLES``, below): otherwise every call of these one-op programs pays page
faults for its fresh output pages (~1.3 us per 4 KiB), which the train chunk, reusing its
buffers over 16 steps, mostly does not. The rows' results are checked against
`lax.conv_general_dilated`'s (relative max error printed). Not part of the tests; what it
found on the 2-vCPU Intel Xeon: README, Speed section (the CNN bullet under "Why the rest
is not met").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


# Large blocks served from the heap and kept there, not fresh zeroed pages per call.
TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=100000000000"


def main() -> None:
  if "GLIBC_TUNABLES" not in os.environ:      # glibc reads it at start: run again with it
    os.execve(sys.executable, [sys.executable, *sys.argv],
              {**os.environ, "GLIBC_TUNABLES": TUNABLES})
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=9)
  parser.add_argument("--json", help="write the medians and the machine here")
  args = parser.parse_args()

  import jax
  import jax.numpy as jnp
  from jax import lax

  from practice_jax import autotune, kernels
  from practice_jax.models import conv

  n, h, w, cin, cout = args.batch, 26, 26, 32, 64
  oh, ow = h - 2, w - 2
  bf16, f32 = jnp.bfloat16, jnp.float32
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((n, h, w, cin)), f32)
  k = jnp.asarray(rng.standard_normal((3, 3, cin, cout)) / np.sqrt(9 * cin), f32)
  dy = jnp.asarray(rng.standard_normal((n, oh, ow, cout)), f32)
  x_cnhw = jnp.transpose(x, (3, 1, 2, 0))
  dy_hwnc = jnp.transpose(dy, (1, 2, 0, 3))
  a = jnp.asarray(rng.standard_normal((2048, 2048)), f32)

  def conv2d(x, k):
    return lax.conv_general_dilated(x, k, (1, 1), "VALID", dimension_numbers=conv._DIMS)

  def dk_eigen(x_cnhw, dy_hwnc):          # [cin, 3, 3, cout]
    return conv2d(x_cnhw, dy_hwnc)

  # The flat [H, W, N]-major index p = (h * w + w_) * n + b: output p reads input
  # p + (i * w + j) * n for tap (i, j); rows of full width w, the last 2 columns dropped.
  rows = oh * w * n
  offsets = [(i * w + j) * n for i in range(3) for j in range(3)]

  def patches_bf16(x_cnhw):               # [9 cin, rows], bfloat16
    flat = jnp.pad(x_cnhw.reshape(cin, -1).astype(bf16), [(0, 0), (0, 2 * n)])
    return jnp.concatenate([flat[:, o:o + rows] for o in offsets], axis=0)

  def dy_rows(dy_hwnc):                   # [cout, rows]: zeros in the 2 extra columns
    padded = jnp.pad(jnp.transpose(dy_hwnc, (3, 0, 1, 2)), [(0, 0), (0, 0), (0, 2), (0, 0)])
    return padded.reshape(cout, rows)

  def amx_fwd_dk(x_cnhw, k, dy_hwnc):
    p = patches_bf16(x_cnhw)
    k_t = jnp.transpose(k.reshape(9 * cin, cout)).astype(bf16)
    y = jnp.dot(k_t, p, preferred_element_type=f32)                     # [cout, rows]
    dk = lax.dot_general(dy_rows(dy_hwnc).astype(bf16), p, (((1,), (1,)), ((), ())),
                         preferred_element_type=f32)                    # [cout, 9 cin]
    return y, dk

  def eigen_fwd_dk(x, x_cnhw, k, dy):
    return conv2d(x, k), dk_eigen(x_cnhw, jnp.transpose(dy, (1, 2, 0, 3)))

  def nine_dot_dk(x_hwnc, dy_hwnc):       # [9, cin, cout]
    flat = jnp.pad(x_hwnc.reshape(-1, cin), [(0, 2 * n), (0, 0)])
    g = jnp.pad(dy_hwnc, [(0, 0), (0, 2), (0, 0), (0, 0)]).reshape(rows, cout)
    return jnp.stack([lax.dot_general(flat[o:o + rows], g, (((0,), (0,)), ((), ())))
                      for o in offsets])

  x_hwnc = jnp.transpose(x, (1, 2, 0, 3))
  conv_flops = 2 * n * oh * ow * 9 * cin * cout
  cases = {     # name: (fn, args, FLOPs for a GFLOP/s column or None)
      "matmul f32": (lambda a: a @ a, (a,), 2 * 2048 ** 3),
      "matmul bf16": (lambda a: jnp.dot(a.astype(bf16), a.astype(bf16),
                                        preferred_element_type=f32), (a,), 2 * 2048 ** 3),
      "eigen fwd": (conv2d, (x, k), conv_flops),
      "eigen dx": (lambda dy, k: jax.vjp(lambda x: conv2d(x, k), x)[1](dy)[0], (dy, k), conv_flops),
      "eigen dk": (dk_eigen, (x_cnhw, dy_hwnc), conv_flops),
      "transpose dy": (lambda dy: jnp.transpose(dy, (1, 2, 0, 3)), (dy,), None),
      "eigen fwd+dk": (eigen_fwd_dk, (x, x_cnhw, k, dy), None),
      "amx fwd+dk": (amx_fwd_dk, (x_cnhw, k, dy_hwnc), None),
      "nine-dot dk": (nine_dot_dk, (x_hwnc, dy_hwnc), conv_flops),
  }
  if kernels.available():               # practice_jax/kernels: what the step now runs
    valid = ((0, 0), (0, 0))

    def kernel_fwd_dx_dk(x, k, dy):
      y, vjp = jax.vjp(lambda x, k: kernels.conv(x, k, valid), x, k)
      return (y, *vjp(dy))
    cases["kernel fwd"] = (lambda x, k: kernels.conv(x, k, valid), (x, k), conv_flops)
    cases["kernel all"] = (kernel_fwd_dx_dk, (x, k, dy), 3 * conv_flops)

  # Values against lax's own forward and gradients (float32).
  y_ref, vjp = jax.vjp(conv2d, x, k)
  dx_ref, dk_ref = vjp(dy)

  def rel(got, ref):
    return float(jnp.abs(got - ref).max() / jnp.abs(ref).max())

  compiled = {name: jax.jit(fn).lower(*fargs).compile(conv.NO_YNN_CONVOLUTIONS)
              for name, (fn, fargs, _) in cases.items()}
  y_amx, dk_amx = compiled["amx fwd+dk"](x_cnhw, k, dy_hwnc)
  y_amx = jnp.transpose(y_amx.reshape(cout, oh, w, n)[:, :, :ow], (3, 1, 2, 0))
  errors = {
      "eigen fwd": rel(compiled["eigen fwd"](x, k), y_ref),
      "eigen dx": rel(compiled["eigen dx"](dy, k), dx_ref),
      "eigen dk": rel(jnp.transpose(compiled["eigen dk"](x_cnhw, dy_hwnc), (1, 2, 0, 3)),
                      dk_ref),
      "amx fwd+dk": max(rel(y_amx, y_ref), rel(jnp.transpose(
          dk_amx.reshape(cout, 3, 3, cin), (1, 2, 3, 0)), dk_ref)),
      "nine-dot dk": rel(compiled["nine-dot dk"](x_hwnc, dy_hwnc).reshape(3, 3, cin, cout),
                         dk_ref),
  }
  if "kernel all" in compiled:
    errors["kernel all"] = max(rel(got, ref) for got, ref in zip(
        compiled["kernel all"](x, k, dy), (y_ref, dx_ref, dk_ref)))

  ms = autotune.time_ms({name: (fn, fargs) for name, (fn, fargs, _) in cases.items()},
                        repeats=args.repeats, compiler_options=conv.NO_YNN_CONVOLUTIONS)

  machine = autotune._machine()
  print(f"{machine['cpu']}, jax {machine['jax']}; conv {h}x{w}x{cin} -> {oh}x{ow}x{cout} 3x3, "
        f"batch {n}; medians of {args.repeats} alternating rounds; load average "
        + " ".join(f"{v:.2f}" for v in os.getloadavg()))
  for name, (_, _, flops) in cases.items():
    rate = f"{flops / ms[name] / 1e6:7.0f} GFLOP/s" if flops else " " * 15
    err = f"rel err {errors[name]:.1e}" if name in errors else ""
    print(f"  {name:<14}{ms[name]:8.2f} ms {rate}  {err}")
  eigen = ms["eigen fwd"] + ms["eigen dx"] + ms["eigen dk"] + ms["transpose dy"]
  print(f"  conv2 on Eigen, forward + both gradients + transpose: {eigen:.1f} ms per step")
  if "kernel all" in ms:
    print(f"  conv2 in bfloat16 on AMX tiles (practice_jax/kernels, model.matmul_dtype="
          f"bfloat16), forward + both gradients: {ms['kernel all']:.1f} ms per step")
  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
      json.dump({"machine": machine, "batch": n, "repeats": args.repeats, "ms": ms,
                 "rel_errors": errors, "conv2_eigen_ms": eigen,
                 "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}, f, indent=1)


if __name__ == "__main__":
  main()
