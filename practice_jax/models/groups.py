"""``config.model.batch_groups``: a batch computed as independent slices in one step.

``batch_groups=k`` runs the model's ``apply`` on k equal slices of the batch and joins the
outputs, inside the same compiled step: the same parameters, the same outputs and
gradients (the examples of a batch never interact in these models), but k independent
chains of small operations instead of one. XLA:CPU runs independent operations of a
program side by side, so on a multi-core CPU small models whose per-operation work is too
small to split well over the cores go faster: on the 2-core Intel Xeon machine kind the
char GPT's step (batch 12) ran 1.21x faster with 3 groups (47.4 vs 39.2 steps/s) and the
char LSTM's 1.26x with 2 (35.9 vs 28.5), while the MNIST CNN (batch 128, convolutions
that already use both cores) did not move (15.1 vs 14.8). Side by side only where XLA:CPU's
buffer assignment leaves the slices' operations on separate buffers: its thunk executor
orders operations that touch the same buffer, and independent time loops (the LSTM's) get
the same temporaries, so they still run one after the other.

Only the first argument is split. What runs whole: a batch that does not divide by k or
whose size is symbolic (an export), a call with another argument that leads with the batch
(it would need splitting too), and calls that collect state (``mutable=...``, e.g.
batch-norm statistics in training, which a slice would change; ``capture_intermediates``;
a ``method=``). Random streams (dropout) are folded with the group's index, so the slices
draw different masks.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

_UNSPLIT = ("mutable", "capture_intermediates", "method")


class BatchGroups:
  """`module`'s init and apply, with apply computed over `groups` slices of the batch
  (module docstring); every other attribute is the module's."""

  def __init__(self, module: Any, groups: int):
    self.module = module
    self.groups = groups

  def __getattr__(self, name: str) -> Any:
    return getattr(self.module, name)

  def init(self, rngs, *args, **kwargs):
    return self.module.init(rngs, *args, **kwargs)

  def apply(self, variables, x, *args, rngs=None, **kwargs):
    batch = x.shape[0] if getattr(x, "ndim", 0) else None
    if (not isinstance(batch, int) or batch % self.groups
        or any(kwargs.get(k) for k in _UNSPLIT)
        or any(getattr(a, "ndim", 0) and a.shape[0] == batch
               for a in (*args, *kwargs.values()))):
      return self.module.apply(variables, x, *args, rngs=rngs, **kwargs)
    outputs = [self.module.apply(variables, part, *args, rngs=_fold(rngs, i), **kwargs)
               for i, part in enumerate(jnp.split(x, self.groups))]
    return jax.tree.map(lambda *parts: jnp.concatenate(parts), *outputs)


def _fold(rngs, index: int):
  if rngs is None:
    return None
  if isinstance(rngs, dict):
    return {name: jax.random.fold_in(key, index) for name, key in rngs.items()}
  return jax.random.fold_in(rngs, index)


def wrap(module: nn.Module, batch_groups: int = 1):
  """`module` itself for one group, else it under BatchGroups."""
  return module if batch_groups == 1 else BatchGroups(module, batch_groups)
