"""The documented, seeded split of the user's own data (image folders, CSV tables) into
training, validation and test parts, when the data does not come split already.

Rule: within each class (or over all rows, for a numeric target) the examples are
shuffled by ``numpy.random.default_rng(split_seed)``; the first ``round(test_fraction *
n)`` go to test, the next ``round(validation_fraction * n)`` to validation, the rest to
training. The split depends on the data and ``split_seed`` only, never on the run's seed,
so runs with different seeds are measured on the same test examples.
"""

from __future__ import annotations

import numpy as np

from practice_jax.errors import UserError


def check_fractions(cfg) -> str | None:
  v, t = cfg.validation_fraction, cfg.test_fraction
  if not (0.0 <= v < 1.0 and 0.0 <= t < 1.0 and v + t < 1.0):
    return (f"config.data.validation_fraction={v} and test_fraction={t} must each be in "
            f"[0, 1) with a sum below 1 (the rest is for training).")
  return None


def seeded_split(labels: np.ndarray | None, n: int, validation_fraction: float,
                 test_fraction: float, split_seed: int, stratify: bool = True,
                 what: str = "the data") -> dict[str, np.ndarray]:
  """{'train', 'validation', 'test'}: sorted indices into 0..n-1 (see the module rule).
  Stratified by `labels` when given and `stratify` is set."""
  rng = np.random.default_rng(split_seed)
  groups = ([np.flatnonzero(labels == c) for c in np.unique(labels)]
            if labels is not None and stratify else [np.arange(n)])
  parts: dict[str, list[np.ndarray]] = {"train": [], "validation": [], "test": []}
  for group in groups:
    group = rng.permutation(group)
    n_test = int(round(test_fraction * len(group)))
    n_val = int(round(validation_fraction * len(group)))
    parts["test"].append(group[:n_test])
    parts["validation"].append(group[n_test:n_test + n_val])
    parts["train"].append(group[n_test + n_val:])
  out = {k: np.sort(np.concatenate(v)).astype(np.int64) for k, v in parts.items()}
  if not len(out["train"]):
    raise UserError(f"{what} has {n} examples: too few to keep any for training after "
                    f"the validation and test fractions; add data or lower the fractions.")
  return out
