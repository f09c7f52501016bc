"""Character-level recurrent language model (Karpathy's char-rnn): embedding, stacked
LSTM, GRU or plain Elman (``cell='simple'``: h = tanh(W x + U h + b)) layers, dropout
between layers, a linear projection to the vocabulary.

How each LSTM layer is computed (``impl``; the numbers and parameters are the same; GRU
and Elman layers always take Flax's scan):

- ``"scan"``: Flax's ``nn.RNN`` over ``nn.OptimizedLSTMCell``, differentiated by JAX
  through ``lax.scan``: each step of the backward loop also multiplies out that step's
  share of both weight gradients and of the input gradient;
- ``"fused"``: `lstm_sequence`, the same cell with a hand-written backward pass
  (``jax.custom_vjp``): the input projections of all time steps are one matmul before
  the loop, the gates' derivatives are computed for all steps at once, the backward loop
  does one small matmul and one elementwise op per step, and the weight and input
  gradients are single matmuls after it.

Measured on the 2-core Intel Xeon machine kind (configs/shakespeare_lstm.py's step in the
loop's compiled chunk, one process, 5 alternating rounds): scan 25.6 steps/s, fused 28.8;
with the batch in 2 independent slices (``config.model.batch_groups=2``, groups.py) 35.9.
Under ``config.model.matmul_dtype='bfloat16'`` (precision.py; "auto" on a CPU with AMX)
the fused layer's matmuls before and after its loops (input projection, input gradient,
both kernel gradients) take bfloat16 inputs and accumulate in float32; each step's
recurrent matmul stays float32, being faster so inside the loop (19.4 vs 27.7 us for
[25, 128] x [128, 512]). Same machine kind, 7 alternating rounds in one process: 49.8 vs
41.8 steps/s.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from practice_jax.models import precision
from practice_jax.models.layers import Dropout
from practice_jax.models.settings import fraction, one_of, positive

CELLS = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell, "simple": nn.SimpleCell}
IMPLS = ("scan", "fused")


class RNNLanguageModel(nn.Module):
  num_classes: int                # vocabulary size
  cell: str = "lstm"              # "lstm", "gru" or "simple" (Elman)
  hidden: int = 128
  num_layers: int = 2
  embed_dim: int = 64
  dropout: float = 0.0
  impl: str = "scan"              # LSTM layers: "scan" or "fused" (module docstring)

  SETTINGS = {"cell": one_of(CELLS), "hidden": positive, "num_layers": positive,
              "embed_dim": positive, "dropout": fraction, "impl": one_of(IMPLS)}

  @nn.compact
  def __call__(self, tokens: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = nn.Embed(self.num_classes, self.embed_dim)(tokens)
    for _ in range(self.num_layers):
      cell = CELLS[self.cell](self.hidden)
      if self.impl == "fused" and self.cell == "lstm" and not self.is_initializing():
        x = fused_lstm(cell.variables["params"], x, precision.bfloat16_matmuls())
      else:
        x = nn.RNN(cell)(x)
      x = Dropout(self.dropout, not train)(x)
    return nn.Dense(self.num_classes)(x)


def fused_lstm(params: dict, x: jnp.ndarray, bfloat16: bool = False) -> jnp.ndarray:
  """nn.RNN(nn.OptimizedLSTMCell) with the cell's `params` on x [batch, time, features],
  through `lstm_sequence`."""
  def stack(prefix, name):
    return jnp.concatenate([params[prefix + gate][name] for gate in "ifgo"], axis=-1)
  return lstm_sequence(stack("i", "kernel"), stack("h", "kernel"), stack("h", "bias"), x,
                       bfloat16)


def _gates(z: jnp.ndarray):
  i, f, g, o = jnp.split(z, 4, axis=-1)
  return jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)


def _lstm_forward(wi, wh, b, x, bfloat16):
  """The forward loop; per time step [time, batch, hidden] arrays of i, f, g, o, c, h."""
  matmul = precision.bfloat16_dot if bfloat16 else jnp.matmul
  xz = matmul(jnp.swapaxes(x, 0, 1), wi) + b       # every step's input projection at once

  def step(carry, z):
    c, h = carry
    i, f, g, o = _gates(z + h @ wh)
    c = f * c + i * g
    h = o * jnp.tanh(c)
    return (c, h), (i, f, g, o, c, h)
  zeros = jnp.zeros((x.shape[0], wh.shape[0]), xz.dtype)
  return lax.scan(step, (zeros, zeros), xz)[1]


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def lstm_sequence(wi: jnp.ndarray, wh: jnp.ndarray, b: jnp.ndarray, x: jnp.ndarray,
                  bfloat16: bool = False) -> jnp.ndarray:
  """The outputs h [batch, time, hidden] of an LSTM (gates i, f, g, o; Flax's
  OptimizedLSTMCell, zero initial state) with input kernels wi [features, 4 hidden],
  recurrent kernels wh [hidden, 4 hidden] and bias b [4 hidden], on x [batch, time,
  features]; its backward pass is written out (module docstring). With `bfloat16`, the
  matmuls outside the time loops (the input projection, the input gradient and both
  kernel gradients) take bfloat16 inputs and accumulate in float32; the recurrent matmul
  of each step stays float32."""
  return jnp.swapaxes(_lstm_forward(wi, wh, b, x, bfloat16)[-1], 0, 1)


def _lstm_sequence_fwd(wi, wh, b, x, bfloat16):
  saved = _lstm_forward(wi, wh, b, x, bfloat16)
  return jnp.swapaxes(saved[-1], 0, 1), (wi, wh, x, saved)


def _lstm_sequence_bwd(bfloat16, residuals, dh_out):
  wi, wh, x, (i, f, g, o, c, h) = residuals
  steps, batch, hidden = h.shape
  tanh_c = jnp.tanh(c)
  c_prev = jnp.concatenate([jnp.zeros_like(c[:1]), c[:-1]])
  h_prev = jnp.concatenate([jnp.zeros_like(h[:1]), h[:-1]])
  # With dh (into h_t) and dc (into c_t): dc += dh * o (1 - tanh(c)^2), and the gates'
  # pre-activation gradients are dc * (g i (1-i), c_prev f (1-f), i (1-g^2)), dh * tanh(c)
  # o (1-o): every factor but dh and dc is known for all steps before the loop.
  dc_from_dh = o * (1 - tanh_c * tanh_c)
  factors = (g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g * g), tanh_c * o * (1 - o))

  wh_t = wh.T                                      # once, not in every step

  def step(carry, inputs):
    dh_next, dc_next = carry
    dh_t, dc_from_dh, fi, ff, fg, fo, f = inputs
    dh = dh_t + dh_next
    dc = dc_next + dh * dc_from_dh
    dz = jnp.concatenate([dc * fi, dc * ff, dc * fg, dh * fo], axis=-1)
    return (dz @ wh_t, dc * f), dz
  zeros = jnp.zeros((batch, hidden), h.dtype)
  _, dz = lax.scan(step, (zeros, zeros),
                   (jnp.swapaxes(dh_out, 0, 1), dc_from_dh, *factors, f), reverse=True)
  dz_flat = dz.reshape(steps * batch, 4 * hidden)
  x_flat = jnp.swapaxes(x, 0, 1).reshape(steps * batch, -1)
  h_flat = h_prev.reshape(steps * batch, hidden)
  if bfloat16:
    dzb = dz.astype(jnp.bfloat16)
    return (precision.bfloat16_gram(x_flat, dzb), precision.bfloat16_gram(h_flat, dzb),
            dz_flat.sum(axis=0), jnp.swapaxes(precision.bfloat16_dot(dzb, wi.T), 0, 1))
  return (x_flat.T @ dz_flat, h_flat.T @ dz_flat,
          dz_flat.sum(axis=0), jnp.swapaxes(dz @ wi.T, 0, 1))


lstm_sequence.defvjp(_lstm_sequence_fwd, _lstm_sequence_bwd)
