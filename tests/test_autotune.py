"""practice_jax/autotune.py: conv_impl="auto" on CPU measures each lowering once per shape
(timing replaced by fixed numbers here), caches the choice on disk and in memory, survives
a corrupt cache, can be switched off (the hand-set rule), and every choice computes what
nn.Conv computes."""

import json

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from practice_jax import autotune
from practice_jax.models import conv

X_SHAPE, FEATURES = (2, 10, 10, 20), 24       # > 16 channels: all three lowerings apply


@pytest.fixture
def tuned(monkeypatch, tmp_path):
  """Autotune on, a fresh cache file, and fixed 'measurements' (fastest: `fastest[0]`)."""
  path = tmp_path / "cache" / "autotune.json"
  monkeypatch.setenv("PRACTICE_JAX_AUTOTUNE", "1")
  monkeypatch.setenv("PRACTICE_JAX_AUTOTUNE_CACHE", str(path))
  monkeypatch.setattr(autotune, "_memory", None)
  monkeypatch.setattr(autotune, "_warned", set())
  calls, fastest = [], ["eigen"]

  def fake_conv(impls, *args):
    calls.extend(("conv", impl) for impl in impls)
    return {impl: 1.0 if impl == fastest[0] else {"xla": 5.0, "eigen": 6.0, "im2col": 7.0}[impl]
            for impl in impls}

  def fake_pool(impls, *args):
    calls.extend(("max_pool", impl) for impl in impls)
    return {impl: {"reshape": 1.0, "xla": 2.0}[impl] for impl in impls}
  monkeypatch.setattr(autotune, "measure_conv", fake_conv)
  monkeypatch.setattr(autotune, "measure_max_pool", fake_pool)
  return path, calls, fastest


def trace_conv(impl="auto", strides=1):
  """Traces (jit) forward + gradients of a Conv; its parameters and results."""
  x = jax.random.normal(jax.random.key(0), X_SHAPE)
  model = conv.Conv(FEATURES, 3, strides=strides, padding="VALID", impl=impl)
  params = model.init(jax.random.key(1), x)

  @jax.jit
  def run(params, x):
    y, vjp = jax.vjp(model.apply, params, x)
    return y, vjp(jnp.ones_like(y))
  return params, x, run(params, x)


def test_first_trace_measures_and_caches_then_reuses(tuned, capsys):
  path, calls, _ = tuned
  conv.Conv(FEATURES, 3, padding="VALID", impl="auto").init(jax.random.key(0),
                                                           jnp.ones(X_SHAPE))
  assert calls == []                     # Module.init's sample batch is not measured
  trace_conv()
  assert sorted(calls) == [("conv", "eigen"), ("conv", "im2col"), ("conv", "xla")]
  err = capsys.readouterr().err
  assert ("autotune: conv 10x10x20->8x8x24 3x3/1 (batch 2, float32): eigen 1.0 ms, "
          "xla 5.0 ms, im2col 7.0 ms -> eigen") in err
  (entry,) = json.loads(path.read_text())["entries"].values()
  assert entry["choice"] == "eigen" and entry["x"] == list(X_SHAPE)
  assert entry["cpu"] == autotune.cpu_model() and entry["jax"] == jax.__version__
  # The next trace (same process) and the next run (memory dropped) reuse the choice.
  calls.clear()
  trace_conv()
  autotune._memory = None
  trace_conv()
  assert calls == [] and "autotune:" not in capsys.readouterr().err
  # Strided: "eigen" would be im2col, so only two candidates are measured.
  trace_conv(strides=2)
  assert sorted(calls) == [("conv", "im2col"), ("conv", "xla")]
  assert len(json.loads(path.read_text())["entries"]) == 2


def test_a_corrupt_cache_is_measured_again_with_one_warning(tuned):
  path, calls, _ = tuned
  path.parent.mkdir(parents=True)
  path.write_text("{not json")
  with pytest.warns(RuntimeWarning, match="unreadable"):
    trace_conv()
  assert len(calls) == 3
  assert len(json.loads(path.read_text())["entries"]) == 1     # rewritten, valid


def test_switched_off_it_follows_the_hand_set_rule(tuned, monkeypatch):
  _, calls, _ = tuned
  monkeypatch.setenv("PRACTICE_JAX_AUTOTUNE", "0")
  assert not autotune.enabled()
  def jaxpr(impl):
    return str(jax.make_jaxpr(lambda x, k: conv.conv2d(x, k, (1, 1), [(0, 0)] * 2, impl))(
        jnp.ones(X_SHAPE), jnp.ones((3, 3, 20, FEATURES))))
  assert conv._auto(20, 8 * 8, (1, 1)) == "xla"              # <= 256 output pixels
  assert jaxpr("auto") == jaxpr("xla") != jaxpr("eigen")
  assert calls == []
  # Pinned lowerings are never measured either.
  monkeypatch.setenv("PRACTICE_JAX_AUTOTUNE", "1")
  trace_conv("im2col")
  assert calls == []


@pytest.mark.parametrize("fastest", ["xla", "eigen", "im2col"])
def test_every_choice_computes_what_nn_conv_computes(tuned, fastest):
  tuned[2][0] = fastest
  params, x, (y, (dparams, dx)) = trace_conv()
  ref = nn.Conv(FEATURES, (3, 3), padding="VALID")
  y_ref, vjp = jax.vjp(ref.apply, params, x)
  dparams_ref, dx_ref = vjp(jnp.ones_like(y_ref))
  chex.assert_trees_all_close((y, dparams, dx), (y_ref, dparams_ref, dx_ref),
                              rtol=1e-4, atol=1e-4)
  (entry,) = autotune._memory.values()
  assert entry["choice"] == fastest


def test_max_pool_choice_and_the_show_command(tuned, capsys):
  path, calls, _ = tuned
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
  y = jax.jit(lambda x: conv.pool("max", x, "auto"))(x)
  chex.assert_trees_all_close(y, nn.max_pool(x, (2, 2), strides=(2, 2)))
  assert sorted(calls) == [("max_pool", "reshape"), ("max_pool", "xla")]
  trace_conv()
  capsys.readouterr()
  autotune.main(["show"])
  out = capsys.readouterr().out
  assert str(path) in out and autotune.cpu_model() in out
  assert "max_pool 2x2 6x6x3 (batch 2, float32)" in out and "-> reshape" in out
  assert "conv 10x10x20->8x8x24 3x3/1" in out and "eigen 1.0 ms" in out
  autotune.main(["clear"])
  assert not path.exists()
  autotune.main(["show"])
  assert "no autotune choices" in capsys.readouterr().out


def test_a_real_measurement_inside_a_jit_trace(monkeypatch, tmp_path):
  monkeypatch.setenv("PRACTICE_JAX_AUTOTUNE", "1")
  monkeypatch.setenv("PRACTICE_JAX_AUTOTUNE_CACHE", str(tmp_path / "autotune.json"))
  monkeypatch.setattr(autotune, "_memory", None)
  monkeypatch.setattr(autotune, "REPEATS", 1)
  x, k = jnp.ones((1, 6, 6, 3)), jnp.ones((3, 3, 3, 20))
  y = jax.jit(lambda x, k: conv.conv2d(x, k, (1, 1), [(1, 1)] * 2, "auto"))(x, k)
  chex.assert_trees_all_close(y, conv.conv2d(x, k, (1, 1), [(1, 1)] * 2, "xla"), rtol=1e-5)
  (entry,) = autotune._memory.values()
  assert set(entry["ms"]) == {"xla", "eigen", "im2col"} and entry["choice"] in entry["ms"]


def test_a_symbolic_batch_takes_the_hand_set_rule(tuned):
  """jax.export with a symbolic batch size (practice_jax.export) traces convolutions and
  pools whose shapes are not numbers: nothing is measured or cached, no error."""
  path, calls, _ = tuned
  model = conv.Conv(FEATURES, 3, padding="VALID", impl="auto")
  params = model.init(jax.random.key(1), jnp.ones(X_SHAPE))
  (batch,) = jax.export.symbolic_shape("b")
  spec = jax.ShapeDtypeStruct((batch,) + X_SHAPE[1:], jnp.float32)
  exported = jax.export.export(jax.jit(
      lambda p, x: conv.pool("max", model.apply(p, x), "auto")))(params, spec)
  assert exported.in_avals[-1].shape[0] == batch
  assert calls == [] and not path.exists()
