"""optax optimizers and learning-rate schedules, built from the config.

Every optimizer is one optax chain of the same shape, so the regularisers mean the same
thing whichever optimizer is chosen:

    clip_by_global_norm -> coupled penalties (L1, L2) -> scale_by_<optimizer>
      -> decoupled weight decay -> scale_by_learning_rate(schedule)

This is exactly ``optax.adamw`` for adamw and ``optax.sgd`` for sgd; the penalties and the
decay are masked so that parameters matching ``optimizer.no_decay`` (biases and norm
scales by default) are left alone.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import ml_collections
import optax

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "step", "one_cycle")


def build_schedule(cfg: ml_collections.ConfigDict, learning_rate: float, total_steps: int,
                   steps_per_epoch: int) -> optax.Schedule:
  """The learning rate as a function of the step; epochs are converted to steps here."""
  total_steps = max(total_steps, 1)
  if cfg.name == "constant":
    return optax.constant_schedule(learning_rate)
  if cfg.name == "cosine":
    return optax.cosine_decay_schedule(learning_rate, total_steps, alpha=cfg.end_factor)
  if cfg.name == "warmup_cosine":
    warmup = cfg.warmup_steps or int(round(cfg.warmup_epochs * steps_per_epoch))
    warmup = min(warmup, total_steps - 1)
    return optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, warmup, total_steps, end_value=learning_rate * cfg.end_factor)
  if cfg.name == "step":
    boundaries = {int(f * total_steps): cfg.step_factor for f in cfg.step_fractions}
    return optax.piecewise_constant_schedule(learning_rate, boundaries)
  if cfg.name == "one_cycle":
    return optax.cosine_onecycle_schedule(total_steps, learning_rate,
                                          pct_start=cfg.one_cycle_pct_start)
  raise ValueError(f"unknown schedule {cfg.name!r}")  # validation catches this first


def decay_mask(no_decay: str):
  """A mask function: True for parameters that get weight decay and penalties."""
  pattern = re.compile(no_decay) if no_decay else None

  def mask(params):
    def keep(path, _):
      name = "/".join(str(getattr(k, "key", k)) for k in path)
      return pattern is None or not pattern.search(name)
    return jax.tree_util.tree_map_with_path(keep, params)
  return mask


def add_l1_penalty(l1: float) -> optax.GradientTransformation:
  """Adds the subgradient of ``l1 * |w|`` to the gradient (optax has no L1 transform)."""
  def update(updates, state, params):
    updates = jax.tree.map(lambda g, p: g + l1 * jnp.sign(p), updates, params)
    return updates, state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _scale_by(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  if cfg.name == "sgd":
    if cfg.momentum == 0:
      return optax.identity()
    return optax.trace(decay=cfg.momentum, nesterov=cfg.nesterov)
  if cfg.name in ("adam", "adamw"):
    return optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
  if cfg.name == "rmsprop":
    parts = [optax.scale_by_rms(decay=cfg.rmsprop_decay, eps=cfg.eps)]
    if cfg.momentum:
      parts.append(optax.trace(decay=cfg.momentum))
    return optax.chain(*parts)
  raise ValueError(f"unknown optimizer {cfg.name!r}")  # validation catches this first


def build_optimizer(cfg: ml_collections.ConfigDict, schedule: optax.Schedule
                    ) -> optax.GradientTransformation:
  mask = decay_mask(cfg.no_decay)
  parts = []
  if cfg.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
  if cfg.l1:
    parts.append(optax.masked(add_l1_penalty(cfg.l1), mask))
  if cfg.l2:
    parts.append(optax.add_decayed_weights(cfg.l2, mask))
  parts.append(_scale_by(cfg))
  if cfg.weight_decay:
    parts.append(optax.add_decayed_weights(cfg.weight_decay, mask))
  parts.append(optax.scale_by_learning_rate(schedule))
  return optax.chain(*parts)
