"""Character-level text data (Tiny Shakespeare) for language modelling.

The vocabulary is the sorted set of characters of the training split; it is stored with
every checkpoint, so sampling never needs the dataset. Training windows are drawn from
random start offsets (a permutation of all offsets per (seed, epoch), so the data is a
function of the step); validation uses a fixed set of non-overlapping windows. The
training text lives on the devices (an ``ArraySource`` whose examples are the offsets).

With ``config.data.labels='speaker'`` every window also carries a label per character
(``speaker_labels``), for token classification (tasks/token_classification.py).
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from practice_jax.data import tfds_source
from practice_jax.data.base import Entry
from practice_jax.data.in_memory import ArraySource
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
  texts: dict[str, str] | None = None     # the splits' text, by split name


# Per-character labels of a text (config.data.labels): their class names.
LABELS = {"none": (), "speaker": ("dialogue", "speaker")}
_LINE_ENDING_IN_COLON = re.compile(r"^[^\n]*:$", re.MULTILINE)


def speaker_labels(text: str) -> np.ndarray:
  """1 for each character of a speaker-name line, 0 for every other character (int32,
  one per character). A speaker-name line (Tiny Shakespeare's "First Citizen:") ends
  with ':' and is the text's first line or follows an empty line; its newline is not
  part of it. A line of dialogue that ends with ':' ("...and thus answer'd:") follows a
  non-empty line, so telling the two apart takes the context on both sides."""
  labels = np.zeros(len(text), np.int32)
  for match in _LINE_ENDING_IN_COLON.finditer(text):
    start = match.start()
    if start == 0 or text[max(0, start - 2):start] in ("\n", "\n\n"):
      labels[start:match.end()] = 1
  return labels


def load_text(cfg: ml_collections.ConfigDict) -> TextData:
  texts = tfds_source.load_text_splits(cfg.name, cfg.data_dir, cfg.manual_dir)
  vocab = Vocabulary.from_text(texts["train"])
  return TextData(vocab, vocab.encode(texts["train"]), vocab.encode(texts["validation"]),
                  vocab.encode(texts["test"]), texts)


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


def windows_source(tokens: np.ndarray, eval_texts: dict[str, np.ndarray], vocab: Vocabulary,
                   block_size: int, eval_windows: int, seed: int,
                   labels: tuple[np.ndarray, dict[str, np.ndarray], tuple[str, ...]]
                   | None = None) -> ArraySource:
  """Training windows of `block_size + 1` tokens (input and shifted target) from every
  offset of this process's share of `tokens`; fixed evaluation windows of `eval_texts`.
  With `labels` = (the training labels, each eval text's labels, the class names), each
  window also holds its characters' labels ('labels'), and the info the class names."""
  length = block_size + 1
  train, info = {"tokens": tokens}, {"vocab": vocab.chars}
  evals = {name: {"tokens": t} for name, t in eval_texts.items()}
  if labels is not None:
    train["labels"], info["label_names"] = labels[0], list(labels[2])
    for name in evals:
      evals[name]["labels"] = labels[1][name]

  def select(data, starts):
    return {k: jax.vmap(lambda s, v=v: jax.lax.dynamic_slice_in_dim(v, s, length))(starts)
            for k, v in data.items()}

  splits = {name: {k: fixed_windows(v, length, eval_windows) for k, v in fields.items()}
            for name, fields in evals.items()}
  # Every offset at which a whole (input, target) window fits is one "example".
  return ArraySource(train, splits, info, seed,
                     num_examples=max(len(tokens) - block_size, 0), select=select,
                     element_spec={k: jax.ShapeDtypeStruct((length,), jnp.int32)
                                   for k in train})


def _config(name: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = name
  c.data_dir = ml_collections.config_dict.placeholder(str)    # as for image datasets
  c.manual_dir = ml_collections.config_dict.placeholder(str)
  c.block_size = 64          # characters per training window (and the model's context)
  c.eval_windows = 500       # fixed validation/test windows evaluated; 0 = all
  # Per-character labels in every window, for token classification: "none", or
  # "speaker" (speaker-name lines versus the rest; see speaker_labels).
  c.labels = "none"
  return c


def _check(cfg: ml_collections.ConfigDict) -> str | None:
  if cfg.block_size < 1 or cfg.eval_windows < 0:
    return "config.data.block_size must be at least 1 and data.eval_windows >= 0."
  if cfg.get("labels", "none") not in LABELS:
    return (f"config.data.labels={cfg.labels!r} must be one of "
            f"{', '.join(sorted(LABELS))}.")
  return None


def _build(cfg: ml_collections.ConfigDict, seed: int) -> ArraySource:
  data = load_text(cfg)
  labels = None
  if cfg.get("labels", "none") != "none":
    train_labels = speaker_labels(data.texts["train"])
    labels = (process_shard(train_labels),
              {name: speaker_labels(data.texts[name]) for name in ("validation", "test")},
              LABELS[cfg.labels])
  return windows_source(process_shard(data.train), {"validation": data.validation,
                                                    "test": data.test},
                        data.vocab, cfg.block_size, cfg.eval_windows, seed, labels)


def _from_info(cfg: ml_collections.ConfigDict, info: dict) -> ArraySource:
  empty = np.zeros((0,), np.int32)
  labels = (None if cfg.get("labels", "none") == "none"
            else (empty, {}, tuple(info.get("label_names", LABELS[cfg.labels]))))
  return windows_source(empty, {}, Vocabulary(info["vocab"]), cfg.block_size,
                        cfg.eval_windows, 0, labels)


ENTRY = Entry("text", _config, _check, _build, _from_info)
