"""What every task shares: its part in pmap mode."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import ml_collections

from practice_jax.parallel import PMAP_AXIS


def pmap_axis(config: ml_collections.ConfigDict) -> str | None:
  """The axis name the model and step reduce over: only in config.parallel.mode='pmap'."""
  return PMAP_AXIS if config.parallel.mode == "pmap" else None


def all_reduce(reduce: Callable, tree: Any, axis_name: str | None) -> Any:
  """`reduce` (lax.pmean, lax.psum) over the devices under pmap; the tree itself under
  jit, where XLA reduces over the sharded batch by itself."""
  return tree if axis_name is None else jax.tree.map(lambda x: reduce(x, axis_name), tree)
