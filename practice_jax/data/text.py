"""Character-level text data (Tiny Shakespeare) for language modelling.

The vocabulary is the sorted set of characters of the training split; it is stored with
every checkpoint, so sampling never needs the dataset. Training windows are drawn from
random start offsets (a permutation of all offsets per (seed, epoch), so the data is a
function of the step); validation uses a fixed set of non-overlapping windows.
"""

from __future__ import annotations

import dataclasses

import jax
import ml_collections
import numpy as np

from practice_jax.data import catalogue, tfds_source
from practice_jax.errors import UserError


@dataclasses.dataclass
class Vocabulary:
  chars: str

  @classmethod
  def from_text(cls, text: str) -> "Vocabulary":
    return cls("".join(sorted(set(text))))

  @property
  def size(self) -> int:
    return len(self.chars)

  def encode(self, text: str) -> np.ndarray:
    index = {c: i for i, c in enumerate(self.chars)}
    unknown = sorted(set(text) - set(index))
    if unknown:
      raise UserError(f"The text contains characters outside the model's vocabulary "
                      f"({''.join(unknown)!r}); use only characters from the training text.")
    return np.fromiter((index[c] for c in text), np.int32, len(text))

  def decode(self, tokens) -> str:
    return "".join(self.chars[int(t)] for t in tokens)


@dataclasses.dataclass
class TextData:
  vocab: Vocabulary
  train: np.ndarray         # int32 token ids
  validation: np.ndarray
  test: np.ndarray


def _split_text(builder, split: str) -> str:
  tfds = tfds_source._tfds()
  texts = [ex["text"].decode("utf-8") for ex in tfds.as_numpy(builder.as_dataset(split=split))]
  return "".join(texts)


def load_text(cfg: ml_collections.ConfigDict) -> TextData:
  spec = catalogue.CATALOGUE[cfg.name]
  builder = tfds_source.prepare(cfg.name, cfg.data_dir, cfg.manual_dir)
  train = _split_text(builder, spec.train_split)
  vocab = Vocabulary.from_text(train)
  return TextData(vocab, vocab.encode(train),
                  vocab.encode(_split_text(builder, spec.validation_split)),
                  vocab.encode(_split_text(builder, spec.test_split)))


def fixed_windows(tokens: np.ndarray, length: int, max_windows: int) -> np.ndarray:
  """Up to `max_windows` (0: all) non-overlapping windows of `length` tokens, evenly
  spread over the text."""
  count = len(tokens) // length
  if count == 0:
    raise UserError(f"The evaluation text has {len(tokens)} characters, fewer than one "
                    f"window of {length}; lower config.data.block_size.")
  chosen = min(count, max_windows) if max_windows else count
  starts = np.linspace(0, (count - 1) * length, chosen).astype(np.int64)
  return np.stack([tokens[s:s + length] for s in starts])


def process_shard(tokens: np.ndarray) -> np.ndarray:
  """This process's contiguous, equal share of the training text (all of it with one
  process); random windows are then drawn from within the share."""
  count = jax.process_count()
  if count == 1:
    return tokens
  size = len(tokens) // count
  return tokens[jax.process_index() * size:(jax.process_index() + 1) * size]
