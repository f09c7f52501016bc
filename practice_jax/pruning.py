"""Magnitude pruning: one-shot masks for a trained model, and gradual pruning during
training as an optax transformation.

- ``magnitude_masks(params, sparsity, scope)``: boolean masks (True = kept) over the
  prunable leaves (kernels: paths matching ``KERNELS``; biases and norm scales are never
  pruned) that zero exactly ``round(sparsity * n)`` weights of smallest magnitude, where n
  counts every kernel weight (``scope='global'``: one ranking over all of them) or each
  kernel's own (``scope='layer'``: the same fraction of every layer). Ties are broken by
  position, so the count is exact whatever the values.
- ``gradual(...)``: Zhu & Gupta (2017), "To prune, or not to prune": the target sparsity
  rises from 0 at step t0 to s_f at step t1 along s_t = s_f * (1 - (1 - (t - t0) /
  (t1 - t0))^3), and every ``every`` steps (and at t1) the masks are recomputed from the
  weights' magnitudes. Weights pruned once stay pruned (they rank below every live
  weight), so the masks only shrink, and a pruned weight is set to exactly zero by the
  update itself (``p + (-p) == 0``): it stays zero through training whatever the
  optimizer does. The masks and the step counter are the transformation's state, so they
  live in the optimizer state of the train state and a checkpointed run resumes exactly.
  optim.build appends it last in its chain (after the learning rate) when
  ``optimizer.prune_sparsity > 0``; ``optimizer.prune_start``/``prune_end`` are fractions
  of training, ``prune_every`` steps between mask updates, ``prune_scope``
  'global'|'layer'.
- ``keep_masks(masks)``: fixed masks as an optax transformation, for fine-tuning a
  one-shot pruned model (``compress prune --finetune_steps``): pruned weights stay
  exactly zero.
- ``sparsity(params)``: the fraction of zeros of every kernel and overall (reports).

Why not a library: jaxpruner (Google's JAX pruning library, an optax-style wrapper of the
same algorithms) is not on the package index this project installs from
(``pip download jaxpruner --no-deps``: "No matching distribution found"), so the few
functions needed are written here on optax and jax.numpy.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

KERNELS = r"(^|/)kernel$"           # the leaves pruned: weight matrices and conv filters
SCOPES = ("global", "layer")


def _path(path) -> str:
  return "/".join(str(getattr(k, "key", k)) for k in path)


def prunable(params: Any, pattern: str = KERNELS) -> Any:
  """A tree of bools: whether each leaf is pruned (its path matches `pattern`)."""
  regex = re.compile(pattern)
  return jax.tree_util.tree_map_with_path(lambda p, _: bool(regex.search(_path(p))), params)


def _keep_largest(scores: jax.Array, num_pruned) -> jax.Array:
  """A bool mask over the flat `scores`: False for the `num_pruned` smallest (the first
  in position among equals), True for the rest. `num_pruned` may be traced."""
  order = jnp.argsort(scores, stable=True)
  ranks = jnp.zeros(scores.shape, jnp.int32).at[order].set(
      jnp.arange(scores.size, dtype=jnp.int32))
  return ranks >= num_pruned


def _count(fraction, n: int):
  return jnp.round(jnp.asarray(fraction, jnp.float32) * n).astype(jnp.int32)


def _masks(scores: Any, which: Any, sparsity, scope: str) -> Any:
  """Masks (True = kept) for the leaves of `scores` marked in `which` (others: None)."""
  leaves, treedef = jax.tree.flatten(scores)
  chosen = jax.tree.leaves(which)
  masks: list[Any] = [None] * len(leaves)
  picked = [i for i, c in enumerate(chosen) if c]
  if scope == "global" and picked:
    flat = jnp.concatenate([leaves[i].ravel() for i in picked])
    keep = _keep_largest(flat, _count(sparsity, flat.size))
    offset = 0
    for i in picked:
      size = leaves[i].size
      masks[i] = keep[offset:offset + size].reshape(leaves[i].shape)
      offset += size
  else:
    for i in picked:
      masks[i] = _keep_largest(leaves[i].ravel(), _count(sparsity, leaves[i].size)
                               ).reshape(leaves[i].shape)
  return jax.tree.unflatten(treedef, masks)


def magnitude_masks(params: Any, sparsity: float, scope: str = "global",
                    pattern: str = KERNELS) -> Any:
  """Bool masks (True = kept) zeroing the fraction `sparsity` of the smallest-magnitude
  kernel weights, over all kernels ('global') or within each ('layer'); None for the
  leaves that are not pruned."""
  if scope not in SCOPES:
    raise ValueError(f"scope {scope!r}: use one of {SCOPES}")
  scores = jax.tree.map(lambda p: jnp.abs(jnp.asarray(p, jnp.float32)), params)
  return _masks(scores, prunable(params, pattern), sparsity, scope)


def apply_masks(params: Any, masks: Any) -> Any:
  """`params` with the masked-out weights set to zero (leaves without a mask unchanged)."""
  return jax.tree.map(lambda p, m: p if m is None else jnp.where(m, p, jnp.zeros_like(p)),
                      params, masks, is_leaf=lambda x: x is None)


def sparsity(params: Any, pattern: str = KERNELS) -> dict[str, float]:
  """{kernel path: fraction of zeros} for every prunable leaf, and 'total' over them."""
  which = prunable(params, pattern)
  out, zeros, total = {}, 0, 0
  for (path, p), chosen in zip(jax.tree_util.tree_leaves_with_path(params),
                               jax.tree.leaves(which)):
    if chosen:
      p = np.asarray(p)
      z = int(np.sum(p == 0))
      out[_path(path)] = z / p.size
      zeros, total = zeros + z, total + p.size
  out["total"] = zeros / max(total, 1)
  return out


def keep_masks(masks: Any) -> optax.GradientTransformation:
  """Fixed masks (``magnitude_masks``'s, True = kept) for fine-tuning after one-shot
  pruning: kept weights get their updates, pruned ones exactly their negation, so a
  pruned weight is zero after every update (``p + (-p) == 0``) whatever the optimizer
  before it does. Place it last in a chain; leaves without a mask are left alone."""
  def update(updates, state, params=None):
    if params is None:
      raise ValueError("pruning.keep_masks needs the parameters: call update(g, s, params).")
    new = jax.tree.map(lambda m, u, p: u if m is None else jnp.where(m, u, -p),
                       masks, updates, params, is_leaf=lambda x: x is None)
    return new, state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


# -- gradual pruning during training ------------------------------------------------------

def cubic_schedule(final_sparsity: float, start_step: int, end_step: int):
  """Zhu & Gupta's target sparsity at step t: 0 before start_step, final_sparsity from
  end_step on, s_f * (1 - (1 - progress)^3) between."""
  span = max(end_step - start_step, 1)

  def schedule(step):
    progress = jnp.clip((jnp.asarray(step, jnp.float32) - start_step) / span, 0.0, 1.0)
    return final_sparsity * (1.0 - (1.0 - progress) ** 3)
  return schedule


class PruningState(NamedTuple):
  count: jax.Array      # int32: updates seen
  masks: Any            # bool like each prunable leaf (True = kept); a scalar True
                        # for the others


def gradual(final_sparsity: float, start_step: int, end_step: int, every: int = 100,
            scope: str = "global", pattern: str = KERNELS) -> optax.GradientTransformation:
  """Gradual magnitude pruning (module docstring); place it last in a chain, after the
  learning rate, so that its updates are the ones applied to the parameters."""
  if scope not in SCOPES:
    raise ValueError(f"scope {scope!r}: use one of {SCOPES}")
  schedule = cubic_schedule(final_sparsity, start_step, end_step)
  every = max(int(every), 1)

  def init(params):
    which = prunable(params, pattern)
    masks = jax.tree.map(lambda p, c: jnp.ones(jnp.shape(p) if c else (), jnp.bool_),
                         params, which)
    return PruningState(jnp.zeros((), jnp.int32), masks)

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("pruning.gradual needs the parameters: call update(g, s, params).")
    which = prunable(params, pattern)
    step = state.count
    proposed = jax.tree.map(lambda p, u: p + u, params, updates)

    def recompute(masks):
      # Already pruned weights rank below every live one: masks only shrink.
      scores = jax.tree.map(lambda x, m: jnp.where(m, jnp.abs(x), -1.0), proposed, masks)
      new = _masks(scores, which, schedule(step), scope)
      return jax.tree.map(lambda n, m: m if n is None else n, new, masks,
                          is_leaf=lambda x: x is None)

    due = ((step >= start_step) & (step <= end_step)
           & (((step - start_step) % every == 0) | (step == end_step)))
    masks = jax.lax.cond(due, recompute, lambda m: m, state.masks)
    # Kept weights get their update; pruned ones exactly their negation (p + -p == 0).
    new_updates = jax.tree.map(lambda u, p, m: jnp.where(m, u, -p), updates, params, masks)
    return new_updates, PruningState(step + 1, masks)

  return optax.GradientTransformation(init, update)


def from_config(opt, plan) -> optax.GradientTransformation:
  """gradual(...) from config.optimizer's prune_* keys and the run's optim.Plan."""
  total = max(int(plan.total_steps), 1)
  start = int(round(opt.prune_start * total))
  end = max(int(round(opt.prune_end * total)) - 1, start)
  return gradual(opt.prune_sparsity, start, end, opt.prune_every, opt.prune_scope)


def check(opt, prefix: str = "config.") -> str | None:
  """The first problem with config.optimizer's prune_* keys, as one sentence."""
  s = opt.get("prune_sparsity", 0.0)
  if not 0.0 <= s < 1.0:
    return f"{prefix}optimizer.prune_sparsity={s} must be in [0, 1) (0 = no pruning)."
  if s == 0.0:
    return None
  start, end = opt.prune_start, opt.prune_end
  if not 0.0 <= start < end <= 1.0:
    return (f"{prefix}optimizer.prune_start={start} and prune_end={end} must be fractions "
            f"of training with 0 <= prune_start < prune_end <= 1.")
  if opt.prune_every < 1:
    return f"{prefix}optimizer.prune_every={opt.prune_every} must be at least 1 step."
  if opt.prune_scope not in SCOPES:
    return (f"{prefix}optimizer.prune_scope={opt.prune_scope!r} must be one of "
            f"{', '.join(SCOPES)}.")
  return None
