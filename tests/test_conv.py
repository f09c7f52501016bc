"""models/conv.py: every conv_impl and the reshape pools match nn.Conv / nn.*_pool, forward
and gradients, for the kernel sizes, strides and paddings the catalogue uses; the
catalogue's CNNs give the same logits with any conv_impl from the same parameters."""

from __future__ import annotations

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from practice_jax.models import conv
from practice_jax.models.cnn import CNN
from practice_jax.models.lenet import LeNet5
from practice_jax.models.resnet import ResNet

TOL = dict(rtol=1e-4, atol=1e-4)
# LLVM -O0: these small graphs compile 5-10x faster (compiling dominates this file) and
# the HLO passes that pick a convolution's kernel still run.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})

# (kernel, stride, padding, in_features, features, size): what cnn.py, lenet.py and
# resnet.py use, at small sizes. More than 16 channels where "eigen" takes its own path.
CASES = [
    (3, 1, "SAME", 3, 32, 8), (3, 1, "VALID", 32, 24, 9), (5, 1, "SAME", 4, 8, 8),
    (5, 1, 2, 1, 6, 8), (5, 1, "VALID", 6, 16, 9), (3, 1, 1, 20, 20, 8),
    (3, 2, 1, 17, 24, 8), (3, 2, 1, 8, 8, 7), (1, 2, "VALID", 20, 24, 8),
]


def _loss_grads(fn, params, x):
  """The output, and the gradients of a weighted sum of it w.r.t. params and input."""
  y = fn(params, x)
  w = jnp.cos(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape)   # nonuniform weights
  return y, jax.grad(lambda p, x: jnp.sum(fn(p, x) * w), argnums=(0, 1))(params, x)


def _all_cases(impl):
  """_loss_grads for every case of CASES, all in one jit (compiling dominates the test)."""
  rng = np.random.default_rng(0)
  inputs = [(rng.normal(size=(2, size, size, cin)).astype(np.float32),
             {"params": {"kernel": rng.normal(0, 0.3, (k, k, cin, cout)).astype(np.float32),
                         "bias": rng.normal(size=cout).astype(np.float32)}})
            for k, _, _, cin, cout, size in CASES]

  def run(inputs):
    outs = []
    for (k, stride, padding, _, cout, _), (x, params) in zip(CASES, inputs):
      layer = (nn.Conv(cout, (k, k), stride, padding=padding) if impl == "nn.Conv"
               else conv.Conv(cout, k, stride, padding=padding, impl=impl))
      outs.append(_loss_grads(layer.apply, params, x))
    return outs
  return jit(run)(inputs)


@pytest.fixture(scope="module")
def nn_conv_outputs():
  return _all_cases("nn.Conv")


@pytest.mark.parametrize("impl", conv.CONV_IMPLS)
def test_conv_matches_nn_conv(impl, nn_conv_outputs):
  for case, got, want in zip(CASES, _all_cases(impl), nn_conv_outputs):
    chex.assert_trees_all_close(got, want, **TOL, custom_message=f"{impl} {case}")


@pytest.mark.parametrize("k,padding,cin,cout,size", [(3, "VALID", 32, 24, 9),
                                                     (3, "SAME", 3, 32, 8), (3, 1, 20, 20, 8)])
def test_eigen_kernel_gradient_reads_the_cnhw_copy(k, padding, cin, cout, size):
  # Conv(x, x_cnhw): the "eigen" lowering's kernel gradient comes from x_cnhw (x's values
  # laid out [C, H, W, N]); the output and the input gradient from x, as without it.
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, size, size, cin)).astype(np.float32)
  params = {"params": {"kernel": rng.normal(0, 0.3, (k, k, cin, cout)).astype(np.float32),
                       "bias": rng.normal(size=cout).astype(np.float32)}}
  layer = conv.Conv(cout, k, padding=padding, impl="eigen")
  want = _loss_grads(nn.Conv(cout, (k, k), padding=padding).apply, params, x)
  got = _loss_grads(lambda p, x: layer.apply(p, x, jnp.transpose(x, (3, 1, 2, 0))), params, x)
  chex.assert_trees_all_close(got, want, **TOL)
  zeros = jnp.zeros((cin, size, size, 2))
  _, (grads, dx) = _loss_grads(lambda p, x: layer.apply(p, x, zeros), params, x)
  np.testing.assert_array_equal(grads["params"]["kernel"], 0.0)
  chex.assert_trees_all_close(dx, want[1][1], **TOL)


def test_conv_also_returns_its_output_laid_out_cnhw():
  x = np.random.default_rng(0).normal(size=(3, 10, 10, 1)).astype(np.float32)
  for padding, stride in (("VALID", 1), ("SAME", 1), (1, 2)):
    layer = conv.Conv(8, 3, stride, padding=padding, impl="eigen")
    variables = layer.init(jax.random.key(0), x)
    y, y_cnhw = layer.apply(variables, x, cnhw_out=True)
    chex.assert_trees_all_close(y_cnhw, jnp.transpose(y, (3, 1, 2, 0)), **TOL)


def test_no_ynn_convolutions_counts_the_lowerings_and_drops_the_extra_rows():
  # Traced under conv.no_ynn_convolutions, "eigen" convolves without its kh extra rows
  # (YNNPACK is then off for the program); convolutions left to XLA with more than 16
  # channels are counted, so that the caller keeps YNNPACK for them.
  x = np.random.default_rng(0).normal(size=(2, 10, 10, 20)).astype(np.float32)
  k = np.random.default_rng(1).normal(0, 0.3, (3, 3, 20, 24)).astype(np.float32)
  pads = [(1, 1), (1, 1)]
  fwd = lambda impl: lambda x, k: _loss_grads(          # noqa: E731
      lambda k, x: conv.conv2d(x, k, (1, 1), pads, impl), k, x)
  want = jit(fwd("xla"))(x, k)
  assert "tensor<2x13x10x24xf32>" in jax.jit(fwd("eigen")).lower(x, k).as_text()
  with conv.no_ynn_convolutions() as record:
    lowered = jax.jit(fwd("eigen")).lower(x, k)
  assert record == {"eigen": 2, "ynn": 0}                 # the output and the gradients
  assert "tensor<2x13x10x24xf32>" not in lowered.as_text()
  chex.assert_trees_all_close(lowered.compile(conv.NO_YNN_CONVOLUTIONS)(x, k), want, **TOL)
  with conv.no_ynn_convolutions() as record:
    jax.jit(fwd("xla")).lower(x, k)
    jax.jit(fwd("xla")).lower(x[..., :4], k[:, :, :4, :8])        # YNNPACK would not
  assert record == {"eigen": 0, "ynn": 2}


def test_params_match_nn_conv():
  x = jnp.ones((1, 6, 6, 3))
  for padding in ("SAME", 1):
    want = nn.Conv(8, (3, 3), padding=padding).init(jax.random.key(1), x)
    for impl in conv.CONV_IMPLS:
      got = conv.Conv(8, 3, padding=padding, impl=impl).init(jax.random.key(1), x)
      chex.assert_trees_all_equal(got, want)


def test_unknown_impl_is_one_clear_error():
  with pytest.raises(ValueError, match="Unknown conv_impl 'fft'"):
    conv.Conv(4, 3, impl="fft").init(jax.random.key(0), jnp.ones((1, 4, 4, 1)))
  with pytest.raises(ValueError, match="Unknown conv_impl"):
    CNN(10, conv_impl="fft").init(jax.random.key(0), jnp.ones((1, 8, 8, 1)))


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("size", [8, 7])
def test_pools_match_nn(kind, size):
  x = np.random.default_rng(0).integers(0, 3, (2, size, size, 5)).astype(np.float32)  # ties
  want = jit(_loss_grads, static_argnums=0)(lambda _, x: conv.pool(kind, x, "xla"), (), x)
  got = jit(_loss_grads, static_argnums=0)(lambda _, x: conv.pool(kind, x, "eigen"), (), x)
  chex.assert_trees_all_close(got, want, **TOL)


def test_max_pool_gradient_goes_to_the_first_of_tied_maxima_like_nn():
  x = jnp.array([[1., 1.], [0., 1.]])[None, :, :, None]
  for pool in (conv.max_pool, lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))):
    g = jax.grad(lambda x: pool(x).sum())(x)
    np.testing.assert_array_equal(g[0, :, :, 0], [[1., 0.], [0., 0.]])


MODELS = [
    (CNN, dict(features=(32, 64), pools=("none", "max"), padding="VALID", dense=(16,)),
     (28, 28, 1)),
    (CNN, dict(), (28, 28, 1)),
    (CNN, dict(kernel_size=5, batch_norm=True), (16, 16, 3)),
    (LeNet5, dict(), (28, 28, 1)),
    (ResNet, dict(stage_sizes=(1, 1), width=24), (16, 16, 3)),
]


def test_cnn_second_conv_kernel_gradient_from_the_first_stage_cnhw_copy():
  # The PyTorch-examples CNN: the first stage (1 channel in, no pool) is also computed
  # laid out [C, H, W, N] for the second conv's kernel gradient; all gradients as nn's.
  cls, kwargs, shape = MODELS[0]
  x = np.random.default_rng(0).normal(size=(4,) + shape).astype(np.float32)
  grads = {}
  for impl in ("xla", "eigen"):
    model = cls(10, conv_impl=impl, **kwargs)
    variables = model.init(jax.random.key(1), x)
    loss = lambda v, x: jnp.sum(jnp.cos(model.apply(v, x)))
    grads[impl] = jit(jax.grad(loss))(variables, x)
    jaxpr = str(jax.make_jaxpr(model.apply)(variables, x))
    assert ("f32[32,2704]" in jaxpr) == (impl == "eigen")   # [C, H * W * N] matmul
  chex.assert_trees_all_close(grads["eigen"], grads["xla"], **TOL)


@pytest.mark.parametrize("cls,kwargs,shape", MODELS)
def test_models_give_same_logits(cls, kwargs, shape):
  x = np.random.default_rng(0).normal(size=(4,) + shape).astype(np.float32)
  ref = cls(10, **kwargs)
  variables = ref.init(jax.random.key(1), x)
  apply = lambda m: jit(lambda v, x: m.apply(v, x, train=True, mutable=["batch_stats"]))
  want = apply(ref)(variables, x)
  for impl in conv.CONV_IMPLS[1:]:
    mine = cls(10, conv_impl=impl, **kwargs)
    chex.assert_trees_all_equal(variables, mine.init(jax.random.key(1), x))
    got = apply(mine)(variables, x)
    chex.assert_trees_all_close(got, want, **TOL, custom_message=impl)
