"""A BERT-style Transformer encoder over characters, with a per-token head.

``Encoder`` (the part that transfers): token embeddings with one extra row for the
[MASK] token (id ``vocab_size``), learned position embeddings, ``num_layers`` pre-norm
blocks of bidirectional multi-head self-attention (every position sees every other,
through ``jax.nn.dot_product_attention`` without a causal mask) and a 4x GELU MLP, and a
final LayerNorm. ``BERT`` is that encoder, held as the submodule ``encoder``, followed by
a Dense ``head`` giving ``num_classes`` outputs per token: the vocabulary for masked
language modelling (tasks/masked_lm.py), the tags for token classification
(tasks/token_classification.py). So a masked model's ``encoder/...`` parameters have the
same paths and shapes as a tagger's (same vocabulary, block_size and sizes), and
``config.init_from`` with ``include='^encoder/'`` moves them; only the head is new.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from practice_jax.models.layers import Dropout
from practice_jax.models.settings import fraction, positive

_INIT = nn.initializers.normal(stddev=0.02)


class SelfAttention(nn.Module):
  """Multi-head self-attention over all positions (no causal mask)."""
  num_heads: int
  dropout: float

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    b, t, c = x.shape
    head_dim = c // self.num_heads
    qkv = nn.Dense(3 * c, kernel_init=_INIT, name="qkv")(x)
    q, k, v = jnp.split(qkv.reshape(b, t, 3 * self.num_heads, head_dim), 3, axis=2)
    y = jax.nn.dot_product_attention(q, k, v, is_causal=False)      # [b, t, heads, dim]
    y = nn.Dense(c, kernel_init=_INIT, name="proj")(y.reshape(b, t, c))
    return Dropout(self.dropout, not train)(y)


class EncoderBlock(nn.Module):
  """Pre-norm: x + attention(LN(x)), then x + MLP(LN(x))."""
  num_heads: int
  dropout: float

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    c = x.shape[-1]
    x = x + SelfAttention(self.num_heads, self.dropout, name="attention")(
        nn.LayerNorm(name="ln_1")(x), train)
    h = nn.gelu(nn.Dense(4 * c, kernel_init=_INIT, name="mlp_in")(
        nn.LayerNorm(name="ln_2")(x)))
    h = nn.Dense(c, kernel_init=_INIT, name="mlp_out")(h)
    return x + Dropout(self.dropout, not train)(h)


class Encoder(nn.Module):
  vocab_size: int                 # characters; the embedding has one more row: [MASK]
  block_size: int
  num_layers: int
  num_heads: int
  embed_dim: int
  dropout: float

  @nn.compact
  def __call__(self, tokens: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """[batch, time] token ids (0..vocab_size, vocab_size = [MASK]) -> [batch, time,
    embed_dim] contextual features."""
    t = tokens.shape[1]
    wte = nn.Embed(self.vocab_size + 1, self.embed_dim, embedding_init=_INIT, name="wte")
    wpe = nn.Embed(self.block_size, self.embed_dim, embedding_init=_INIT, name="wpe")
    x = Dropout(self.dropout, not train)(wte(tokens) + wpe(jnp.arange(t))[None])
    for i in range(self.num_layers):
      x = EncoderBlock(self.num_heads, self.dropout, name=f"block_{i}")(x, train)
    return nn.LayerNorm(name="ln_final")(x)


class BERT(nn.Module):
  num_classes: int                # outputs per token: the vocabulary, or the tags
  vocab_size: int | None = None   # input characters (None: num_classes); from the data
  block_size: int = 64            # longest window; set from config.data.block_size
  num_layers: int = 4
  num_heads: int = 4
  embed_dim: int = 128
  dropout: float = 0.1

  SETTINGS = {"num_layers": positive, "num_heads": positive, "embed_dim": positive,
              "dropout": fraction}

  @staticmethod
  def check_settings(settings: dict) -> str | None:
    if settings.get("embed_dim", 128) % settings.get("num_heads", 4):
      return (f"config.model.embed_dim={settings['embed_dim']} must be divisible by "
              f"num_heads={settings['num_heads']}.")
    return None

  @nn.compact
  def __call__(self, tokens: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """[batch, time] token ids -> [batch, time, num_classes] logits."""
    vocab = self.num_classes if self.vocab_size is None else self.vocab_size
    h = Encoder(vocab, self.block_size, self.num_layers, self.num_heads, self.embed_dim,
                self.dropout, name="encoder")(tokens, train)
    return nn.Dense(self.num_classes, kernel_init=_INIT, name="head")(h)
