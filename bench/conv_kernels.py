"""Prototype: Winograd convolutions in jnp against models/conv.py's lowerings, on one
convolution shape (default: conv2 of the PyTorch-examples MNIST CNN, batch 128,
26x26x32 -> 24x24x64, 3x3 VALID), on this machine.

    python bench/conv_kernels.py [--shape 128,26,26,32,64] [--padding VALID] [--repeats 7]
                                 [--impls xla,eigen,im2col,winograd2,winograd4v,...]
                                 [--parts fwd,dx,dk,all] [--breakdown]

For each lowering: the max abs error of the forward and of both gradients against
`lax.conv_general_dilated` (float32, inputs N(0,1), kernel N(0, 1/(9 cin))), and the
median wall time (ms, jit, candidates in alternation) of forward alone, forward + input
gradient, forward + kernel gradient and forward + both gradients. "winograd2"/"winograd4":
F(2x2, 3x3) / F(4x4, 3x3) with gradients by autodiff; "winograd2v"/"winograd4v": the same
forward with hand-written gradients (custom_vjp); "eigen+im2col", "eigen+wino2",
"eigen+wino4": "eigen" for the forward pass and input gradient, the kernel gradient by
im2col or in the Winograd domain (custom_vjp). `--breakdown` times the stages of the
Winograd forward pass instead (input transform, batched matmul, output transform) next to
"eigen"'s forward. Not part of the tests.

Measured on the 2-vCPU AMD EPYC (2026-12-02, load average 9-13): every Winograd variant
and every hybrid is slower than "eigen" for conv2 of the MNIST CNN, forward and gradients
(README text: the Speed section); so none is a conv_impl.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


# Winograd F(m x m, 3 x 3) (Lavin & Gray 2015): Y = A^T [(G g G^T) . (B^T d B)] A per
# (m+2) x (m+2) input tile d, the tiles overlapping by 2.
WINOGRAD = {
    2: dict(BT=[[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
            G=[[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]],
            AT=[[1, 1, 1, 0], [0, 1, -1, -1]]),
    4: dict(BT=[[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
            G=[[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
               [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
            AT=[[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                [0, 1, -1, 8, -8, 1]]),
}


def _combine(coeffs, terms):
  """sum_p coeffs[p] * terms[p] over the nonzero coefficients."""
  out = None
  for c, t in zip(coeffs, terms):
    if c:
      t = t if c == 1 else (-t if c == -1 else c * t)
      out = t if out is None else out + t
  return out


def _matrices(m: int):
  return tuple(np.array(WINOGRAD[m][k], np.float32) for k in ("BT", "G", "AT"))


def _input_transform(x, pads, m: int, out_hw):
  """[n, h, w, cin] -> V [(m+2)^2, n * th * tw, cin], V = B^T d B per tile d, each of the
  (m+2)^2 entries one expression of strided slices of x (XLA fuses it into one pass)."""
  import jax.numpy as jnp
  bt, _, _ = _matrices(m)
  a = m + 2
  (out_h, out_w), n, cin = out_hw, x.shape[0], x.shape[-1]
  th, tw = -(-out_h // m), -(-out_w // m)
  x = jnp.pad(x, [(0, 0), (pads[0][0], pads[0][1] + th * m - out_h),
                  (pads[1][0], pads[1][1] + tw * m - out_w), (0, 0)])
  d = [[x[:, p:p + m * (th - 1) + 1:m, q:q + m * (tw - 1) + 1:m] for q in range(a)]
       for p in range(a)]                                              # [n, th, tw, cin]
  v = [_combine([bt[i, p] * bt[j, q] for p in range(a) for q in range(a)],
                [d[p][q] for p in range(a) for q in range(a)])
       for i in range(a) for j in range(a)]
  return jnp.stack(v).reshape(a * a, n * th * tw, cin)


def _output_transform(mm, m: int, n: int, out_hw):
  """M [(m+2)^2, n * th * tw, cout] -> [n, out_h, out_w, cout], Y = A^T M A per tile, each
  output entry one expression of slices of M, stacked straight into the output layout
  (4x faster for F(4x4, 3x3) here than transforming rows, then columns, then transposing)."""
  import jax.numpy as jnp
  _, _, at = _matrices(m)
  a, (out_h, out_w), cout = m + 2, out_hw, mm.shape[-1]
  th, tw = -(-out_h // m), -(-out_w // m)
  mm = mm.reshape(a, a, n, th, tw, cout)
  rows = []
  for i in range(m):
    cols = [_combine([at[i, p] * at[j, q] for p in range(a) for q in range(a)],
                     [mm[p, q] for p in range(a) for q in range(a)]) for j in range(m)]
    rows.append(jnp.stack(cols, axis=3))                               # [n, th, tw, m, co]
  y = jnp.stack(rows, axis=2).reshape(n, th * m, tw * m, cout)
  return y[:, :out_h, :out_w]


def _output_transform_t(dy, m: int):
  """The transpose of _output_transform: dy [n, out_h, out_w, cout] -> dM."""
  import jax.numpy as jnp
  _, _, at = _matrices(m)
  a = m + 2
  n, out_h, out_w, cout = dy.shape
  th, tw = -(-out_h // m), -(-out_w // m)
  dy = jnp.pad(dy, [(0, 0), (0, th * m - out_h), (0, tw * m - out_w), (0, 0)])
  dy = dy.reshape(n, th, m, tw, m, cout)
  t = [dy[:, :, i, :, j] for i in range(m) for j in range(m)]          # [n, th, tw, co]
  dm = [_combine([at[i, p] * at[j, q] for i in range(m) for j in range(m)], t)
        for p in range(a) for q in range(a)]
  return jnp.stack(dm).reshape(a * a, n * th * tw, cout)


def winograd_conv(x, kernel, pads, m: int = 2):
  """NHWC x HWIO (3x3, stride 1, explicit `pads`) -> NHWC by Winograd F(m x m, 3 x 3):
  input tile transform, (m+2)^2 batched matmuls [tiles * batch, cin] x [cin, cout],
  output transform; gradients by autodiff (all three steps are linear)."""
  import jax.numpy as jnp
  from jax import lax
  _, g, _ = _matrices(m)
  a = m + 2
  n, h, w, cin = x.shape
  cout = kernel.shape[-1]
  out_hw = (h + sum(pads[0]) - 2, w + sum(pads[1]) - 2)
  v = _input_transform(x, pads, m, out_hw)
  u = jnp.einsum("ap,pqio,bq->abio", g, kernel, g).reshape(a * a, cin, cout)
  mm = lax.dot_general(v, u, (((2,), (1,)), ((0,), (0,))))            # [a*a, P, cout]
  return _output_transform(mm, m, n, out_hw)


def winograd_conv_vjp(x, kernel, pads, m: int = 2):
  """winograd_conv with hand-written gradients: the input gradient is the Winograd
  convolution of dy with the flipped, transposed kernel (padding 2 - pads; needs pads <=
  2), the kernel gradient G^T (V^T dM) G with dM the transposed output transform of dy."""
  import jax
  import jax.numpy as jnp
  from jax import lax
  pads = tuple(tuple(p) for p in pads)
  _, g, _ = _matrices(m)
  a = m + 2

  @jax.custom_vjp
  def f(x, kernel):
    return winograd_conv(x, kernel, pads, m)

  def fwd(x, kernel):
    return f(x, kernel), (x, kernel)

  def bwd(res, dy):
    x, kernel = res
    n, h, w, cin = x.shape
    out_hw = dy.shape[1:3]
    back = [(2 - lo, 2 - hi) for lo, hi in pads]
    dx = winograd_conv(dy, jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2), back, m)
    v = _input_transform(x, pads, m, out_hw)
    dm = _output_transform_t(dy, m)
    du = lax.dot_general(v, dm, (((1,), (1,)), ((0,), (0,)))).reshape(a, a, cin, -1)
    return dx, jnp.einsum("ap,abio,bq->pqio", g, du, g)
  f.defvjp(fwd, bwd)
  return f(x, kernel)


def hybrid_conv(x, kernel, pads, kernel_grad: str):
  """models/conv.py's "eigen" lowering for the forward pass and the input gradient, with
  the kernel gradient computed another way: "wino2"/"wino4" (G^T (V^T dM) G, as in
  winograd_conv_vjp) or "im2col" (patches^T dy, one matmul)."""
  import jax
  import jax.numpy as jnp
  from jax import lax

  from practice_jax.models import conv
  pads = tuple(tuple(p) for p in pads)

  def eigen(x, kernel):
    return conv.conv2d(x, kernel, (1, 1), pads, "eigen")

  @jax.custom_vjp
  def f(x, kernel):
    return eigen(x, kernel)

  def fwd(x, kernel):
    return eigen(x, kernel), (x, kernel)

  def bwd(res, dy):
    x, kernel = res
    _, vjp = jax.vjp(lambda x: eigen(x, kernel), x)
    dx, = vjp(dy)
    n, _, _, cin = x.shape
    out_h, out_w, cout = dy.shape[1:]
    if kernel_grad == "im2col":
      xp = jnp.pad(x, [(0, 0), *pads, (0, 0)])
      patches = jnp.concatenate([xp[:, i:i + out_h, j:j + out_w] for i in range(3)
                                 for j in range(3)], axis=-1).reshape(-1, 9 * cin)
      return dx, (patches.T @ dy.reshape(-1, cout)).reshape(3, 3, cin, cout)
    m = int(kernel_grad[-1])
    _, g, _ = _matrices(m)
    a = m + 2
    v = _input_transform(x, pads, m, (out_h, out_w))
    du = lax.dot_general(v, _output_transform_t(dy, m), (((1,), (1,)), ((0,), (0,))))
    return dx, jnp.einsum("ap,abio,bq->pqio", g, du.reshape(a, a, cin, cout), g)
  f.defvjp(fwd, bwd)
  return f(x, kernel)


def breakdown(x, k, pads, repeats: int) -> None:
  """Prints the median ms of each stage of the Winograd forward passes and of "eigen"."""
  from jax import lax

  from practice_jax import autotune
  from practice_jax.models import conv
  n, h, w, cin = x.shape
  cout = k.shape[-1]
  out_hw = (h + sum(pads[0]) - 2, w + sum(pads[1]) - 2)
  rng = np.random.default_rng(1)
  fns = {"eigen forward": (lambda x, k: conv.conv2d(x, k, (1, 1), pads, "eigen"), (x, k))}
  for m in (2, 4):
    a, tiles = m + 2, n * -(-out_hw[0] // m) * -(-out_hw[1] // m)
    v = rng.standard_normal((a * a, tiles, cin)).astype(np.float32)
    u = rng.standard_normal((a * a, cin, cout)).astype(np.float32)
    mm = rng.standard_normal((a * a, tiles, cout)).astype(np.float32)
    fns[f"F({m},3) input transform"] = (
        lambda x, m=m: _input_transform(x, pads, m, out_hw), (x,))
    fns[f"F({m},3) batched matmul"] = (
        lambda v, u: lax.dot_general(v, u, (((2,), (1,)), ((0,), (0,)))), (v, u))
    fns[f"F({m},3) output transform"] = (
        lambda mm, m=m: _output_transform(mm, m, n, out_hw), (mm,))
    fns[f"F({m},3) forward"] = (lambda x, k, m=m: winograd_conv(x, k, pads, m), (x, k))
  print(f"median ms of {repeats} alternating runs; load average "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
  for name, ms in autotune.time_ms(fns, repeats=repeats).items():
    print(f"  {name:<26}{ms:8.1f}")
  print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shape", default="128,26,26,32,64", help="batch,h,w,cin,cout")
  parser.add_argument("--padding", default="VALID")
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--impls", default="xla,eigen,im2col,winograd2,winograd4,winograd2v,winograd4v")
  parser.add_argument("--parts", default="fwd,dx,dk,all")
  parser.add_argument("--breakdown", action="store_true",
                      help="time the Winograd forward's stages instead")
  args = parser.parse_args()

  import jax
  import jax.numpy as jnp
  from jax import lax

  from practice_jax import autotune
  from practice_jax.models import conv

  n, h, w, cin, cout = map(int, args.shape.split(","))
  pads = conv._pairs(args.padding, (h, w), (3, 3), (1, 1))
  rng = np.random.default_rng(0)
  x = rng.standard_normal((n, h, w, cin)).astype(np.float32)
  k = (rng.standard_normal((3, 3, cin, cout)) / np.sqrt(9 * cin)).astype(np.float32)
  impls = args.impls.split(",")

  def f(impl):
    if impl == "ref":
      return lambda x, k: lax.conv_general_dilated(x, k, (1, 1), pads,
                                                   dimension_numbers=conv._DIMS)
    if impl.startswith("eigen+"):           # eigen+im2col, eigen+wino2, eigen+wino4
      return lambda x, k: hybrid_conv(x, k, pads, impl[len("eigen+"):])
    if impl.startswith("winograd"):        # winograd2, winograd4: autodiff; ...v: custom_vjp
      m, vjp = int(impl[len("winograd")]), impl.endswith("v")
      return lambda x, k: (winograd_conv_vjp if vjp else winograd_conv)(x, k, pads, m)
    return lambda x, k: conv.conv2d(x, k, (1, 1), pads, impl)

  def parts(impl):
    fn = f(impl)

    def all_(x, k):
      y, vjp = jax.vjp(fn, x, k)
      return y, vjp(y)

    def dx(x, k):
      y, vjp = jax.vjp(lambda x: fn(x, k), x)
      return y, vjp(y)

    def dk(x, k):
      y, vjp = jax.vjp(lambda k: fn(x, k), k)
      return y, vjp(y)
    return {"fwd": fn, "dx": dx, "dk": dk, "all": all_}

  if args.breakdown:
    breakdown(x, k, pads, args.repeats)
    return
  ref = jax.jit(parts("ref")["all"])(x, k)
  print(f"conv {h}x{w}x{cin} -> {cout} 3x3 {args.padding}, batch {n}; "
        f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
  print("max abs error vs lax.conv_general_dilated (forward, input grad, kernel grad; "
        "rel = / the reference's max abs value; cotangent = the output; reference max abs values: "
        + ", ".join(f"{float(jnp.abs(a).max()):.3g}" for a in (ref[0], *ref[1])) + ")")
  for impl in impls:
    got = jax.jit(parts(impl)["all"])(x, k)
    errs = [float(jnp.abs(a - b).max()) for a, b in zip((got[0], *got[1]), (ref[0], *ref[1]))]
    scale = [float(jnp.abs(a).max()) for a in (ref[0], *ref[1])]
    print(f"  {impl:<13} " + "  ".join(f"{e:.2e} ({e / s:.1e} rel)" for e, s in zip(errs, scale)))
  print(f"median ms of {args.repeats} alternating runs:")
  print(f"  {'impl':<13}" + "".join(f"{p:>9}" for p in args.parts.split(",")))
  results = {impl: {} for impl in impls}
  for part in args.parts.split(","):
    ms = autotune.time_ms({impl: (parts(impl)[part], (x, k)) for impl in impls},
                          repeats=args.repeats)
    for impl in impls:
      results[impl][part] = ms[impl]
  for impl in impls:
    print(f"  {impl:<13}" + "".join(f"{results[impl][p]:9.1f}" for p in args.parts.split(",")))
  print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
  main()
