"""Character-level recurrent language model (Karpathy's char-rnn): embedding, stacked
LSTM, GRU or plain Elman (``cell='simple'``: h = tanh(W x + U h + b)) layers, dropout
between layers, a linear projection to the vocabulary."""

import flax.linen as nn
import jax.numpy as jnp

from practice_jax.models.layers import Dropout
from practice_jax.models.settings import fraction, one_of, positive

CELLS = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell, "simple": nn.SimpleCell}


class RNNLanguageModel(nn.Module):
  num_classes: int                # vocabulary size
  cell: str = "lstm"              # "lstm", "gru" or "simple" (Elman)
  hidden: int = 128
  num_layers: int = 2
  embed_dim: int = 64
  dropout: float = 0.0

  SETTINGS = {"cell": one_of(CELLS), "hidden": positive, "num_layers": positive,
              "embed_dim": positive, "dropout": fraction}

  @nn.compact
  def __call__(self, tokens: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = nn.Embed(self.num_classes, self.embed_dim)(tokens)
    for _ in range(self.num_layers):
      cell = CELLS[self.cell](self.hidden)
      x = nn.RNN(cell)(x)
      x = Dropout(self.dropout, not train)(x)
    return nn.Dense(self.num_classes)(x)
