"""practice_jax/kernels: the AMX bfloat16 convolution computes what XLA's convolution does
on bfloat16-rounded inputs (forward and both gradients, for the paddings and channel
counts it takes), on emulated tiles on any machine with a C++ compiler and on the AMX
tiles where the CPU has them; models/conv.py sends a convolution there only under the
bfloat16 matmul policy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from practice_jax import kernels, models
from practice_jax.models import conv, precision

pytestmark = pytest.mark.skipif(not kernels.buildable(), reason="no C++ compiler")

# (n, h, w, cin, cout, kernel, pads): VALID, SAME, uneven, one-sided and partial
# paddings, two chunks of 32 input channels, a 5x5, a 1x1 and a non-square kernel, rows
# past a tile's 32, an output of one pixel.
CASES = [
    (2, 7, 9, 32, 64, (3, 3), ((0, 0), (0, 0))),
    (3, 6, 5, 64, 32, (3, 2), ((1, 1), (0, 1))),
    (2, 12, 12, 32, 32, (5, 5), ((2, 2), (2, 2))),
    (1, 10, 3, 32, 32, (1, 1), ((0, 0), (0, 0))),
    (2, 5, 4, 32, 32, (3, 3), ((2, 0), (0, 2))),
    (3, 3, 3, 32, 64, (3, 3), ((0, 0), (0, 0))),
]


def _rounded(a):
  return a.astype(jnp.bfloat16).astype(jnp.float32)


def _reference(x, k, pads):
  return jax.lax.conv_general_dilated(x, k, (1, 1), pads, dimension_numbers=conv._DIMS)


def _check(case, emulate):
  n, h, w, cin, cout, ks, pads = case
  kx, kk, kg = jax.random.split(jax.random.key(sum(ks) + cin), 3)
  x = jax.random.normal(kx, (n, h, w, cin))
  k = jax.random.normal(kk, (*ks, cin, cout))
  y, vjp = jax.vjp(lambda x, k: kernels.conv(x, k, pads, emulate), x, k)
  want, want_vjp = jax.vjp(lambda x, k: _reference(x, k, pads), _rounded(x), _rounded(k))
  assert y.shape == want.shape and y.dtype == jnp.float32
  g = jax.random.normal(kg, y.shape)
  # Inputs rounded alike, products exact in float32: only the order of the float32 sums
  # differs (and the output gradient is rounded to bfloat16 for both gradients).
  for got, ref in zip((y, *vjp(g)), (want, *want_vjp(_rounded(g)))):
    np.testing.assert_allclose(got, ref, atol=2e-6 * float(jnp.abs(ref).max()))


@pytest.mark.parametrize("case", CASES)
def test_the_emulated_kernels_match_xla_on_bfloat16_inputs(case):
  _check(case, emulate=True)


@pytest.mark.skipif(not kernels.available(), reason="no AMX tiles on this machine")
@pytest.mark.parametrize("case", CASES)
def test_the_amx_kernels_match_xla_on_bfloat16_inputs(case):
  _check(case, emulate=False)


def test_applicable_takes_stride_one_and_channels_in_multiples_of_32():
  k, valid, same = (3, 3, 32, 64), ((0, 0), (0, 0)), ((1, 1), (1, 1))
  assert kernels.applicable((2, 8, 8, 32), k, (1, 1), valid)
  assert kernels.applicable((2, 8, 8, 32), k, (1, 1), same)
  assert not kernels.applicable((2, 8, 8, 32), k, (2, 2), same)           # strided
  assert not kernels.applicable((2, 8, 8, 16), (3, 3, 16, 64), (1, 1), same)
  assert not kernels.applicable((2, 8, 8, 32), (3, 3, 32, 48), (1, 1), same)
  assert not kernels.applicable((2, 8, 8, 32), k, (1, 1), ((3, 3), (1, 1)))  # pad >= k
  assert not kernels.applicable((2, 2, 8, 32), k, (1, 1), valid)            # no output
  with pytest.raises(ValueError, match="multiples of 32"):
    kernels.conv(jnp.zeros((1, 4, 4, 16)), jnp.zeros((3, 3, 16, 32)), same, True)


def test_a_cnn_convolves_on_amx_only_under_the_bfloat16_matmul_policy():
  """The PyTorch-examples CNN's second conv (32 -> 64 channels) under matmul_dtype
  'bfloat16' is the AMX custom call where the machine has the tiles (float32 and close
  to the float32 model's output and gradients), and XLA's convolution everywhere else."""
  kwargs = dict(features=(32, 64), pools=("none", "max"), padding="VALID", dense=(16,),
                conv_impl="eigen")
  x = jax.random.uniform(jax.random.key(0), (2, 12, 12, 1))
  full = models.build("cnn", 10, **kwargs)
  mixed = models.build("cnn", 10, matmul_dtype="bfloat16", **kwargs)
  variables = full.init(jax.random.key(1), x)

  def loss(model, params):
    return (model.apply(params, x) ** 2).mean()
  for model, amx in ((full, False), (mixed, kernels.available())):
    hlo = jax.jit(jax.grad(lambda p, m=model: loss(m, p))).lower(variables).as_text()
    assert ("pj_amx_conv_kernel_grad" in hlo) == amx
    assert hlo.count("@pj_amx_conv(") == (2 if amx else 0)      # forward, input gradient
  assert not precision.bfloat16_matmuls()
  np.testing.assert_allclose(mixed.apply(variables, x), full.apply(variables, x),
                             atol=0.05, rtol=0.05)
  got, want = (jax.grad(lambda p, m=m: loss(m, p))(variables) for m in (mixed, full))
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):     # within 5% (L2)
    assert float(jnp.linalg.norm(a - b)) <= 0.05 * float(jnp.linalg.norm(b)) + 1e-6


def test_the_kernels_run_inside_a_compiled_scan():
  """A train chunk may scan its steps: the custom calls run in XLA:CPU's while loop."""
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 32))
  k = jax.random.normal(jax.random.key(1), (3, 3, 32, 32)) * 0.1
  emulate = not kernels.available()

  def body(carry, _):
    return kernels.conv(carry, k, ((1, 1), (1, 1)), emulate), None
  got = jax.jit(lambda x: jax.lax.scan(body, x, None, length=2)[0])(x)
  want = kernels.conv(kernels.conv(x, k, ((1, 1), (1, 1)), emulate), k,
                      ((1, 1), (1, 1)), emulate)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_a_failed_build_leaves_nothing_behind(monkeypatch, tmp_path):
  """A compiler that fails: no library (so no AMX convolutions: conv2d keeps XLA's), the
  reason kept, and no half-written file in the cache."""
  monkeypatch.setenv("PRACTICE_JAX_KERNEL_CACHE", str(tmp_path / "kernels"))
  monkeypatch.setenv("CXX", "false")
  assert kernels._library.__wrapped__() is None
  assert "failed" in kernels._build_errors[-1]
  assert list((tmp_path / "kernels").iterdir()) == []
