"""optax optimizers and learning-rate schedules, built together from the config.

Every optimizer is one optax chain of the same shape, so the regularisers mean the same
thing whichever optimizer is chosen:

    clip_by_global_norm -> coupled penalties (L1, L2) -> scale_by_<optimizer>
      -> decoupled weight decay -> scale_by_learning_rate(schedule)

This is exactly ``optax.adamw`` for adamw and ``optax.sgd`` for sgd; the penalties and the
decay are masked so that parameters matching ``optimizer.no_decay`` (biases and norm
scales by default) are left alone.

General features, for any task and any of its optimizers:
- ``optimizer.freeze``: parameters whose path matches this regex are not updated
  (``optax.set_to_zero`` through ``optax.multi_transform``); ``frozen(...)`` tells a task
  which ones, so that it also keeps their batch-norm statistics fixed.
- ``optimizer.lr_groups``: ``((regex, factor), ...)``: the first matching group's
  parameters get the learning rate times `factor` (discriminative fine-tuning).
- ``optimizer.unfreeze``: ``((epoch, regex), ...)``: gradual unfreezing. Frozen
  parameters matching `regex` train from `epoch` on: they go through the optimizer from
  the start with their gradients and updates multiplied by 0 until that step (a 0/1
  computed from a step count in the optimizer state, so the step stays pure and a resumed
  run is exact). Their batch-norm statistics update from the start.
- LoRA (lora.py): when the parameters hold adapters (``lora_a``/``lora_b`` leaves), the
  adapters always train and every other parameter is frozen, unless ``optimizer.freeze``
  is given: then only what it matches is frozen.
- Under ``pmap`` the gradients are averaged over the devices here, before anything else
  (see models/layers.py), so no task needs to know how it is parallelised.

A task with several models builds one optimizer per model, from the same or its own
config sections.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from practice_jax.models.layers import device_axis
from practice_jax.models.settings import one_of

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "muon")
EMA_USES = ("alongside", "instead")
MUON_DTYPES = ("auto", "float32", "bfloat16")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "step", "one_cycle")


def optimizer_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "adamw"                 # sgd | adam | adamw | rmsprop | muon
  c.learning_rate = 1e-3           # peak learning rate of the schedule
  c.momentum = 0.9                 # sgd (0 = plain SGD), rmsprop
  c.nesterov = False               # sgd with nesterov momentum
  c.b1 = 0.9                       # adam, adamw
  c.b2 = 0.999                     # adam, adamw
  c.eps = 1e-8                     # adam, adamw, rmsprop
  c.rmsprop_decay = 0.9            # rmsprop
  # muon (Jordan 2024; `muon` below): the Nesterov momentum of each parameter of 2 or more
  # dimensions whose path matches muon_params (Dense and conv kernels, a conv's as the
  # matrix [fan in, out]; not embeddings, norms or biases) replaced by its orthogonal
  # factor (muon_ns_steps Newton-Schulz iterations, matmuls in muon_dtype: 'auto' =
  # bfloat16 where models/precision.py's matmul_dtype 'auto' is) scaled to an RMS of 0.2
  # (Liu et al. 2025), so that one learning rate and weight decay serve it and the Adam
  # (b1, b2, eps) that takes every other parameter.
  c.muon_momentum = 0.95
  c.muon_ns_steps = 5
  c.muon_params = r"kernel$"
  c.muon_dtype = "auto"
  c.weight_decay = 0.0             # decoupled weight decay: adamw, sgd, rmsprop, muon
  c.l2 = 0.0                       # L2 penalty l2/2*|w|^2: l2*w added to the gradient
  c.l1 = 0.0                       # L1 penalty l1*|w|: l1*sign(w) added to the gradient
  # Parameters whose path ('Dense_0/bias') matches this regex are not decayed/penalised.
  c.no_decay = r"(bias|scale)$"
  c.grad_clip_norm = 0.0           # clip the global gradient norm; 0 = off
  # Parameters whose path matches this regex are frozen ('' = none), e.g. '^(?!Dense_1)'
  # trains only the head Dense_1 (a linear probe).
  c.freeze = ""
  # Per-group learning rates: ((regex, factor), ...), the first match wins.
  c.lr_groups = ()
  # Gradual unfreezing: ((epoch, regex), ...): frozen parameters matching regex train from
  # that epoch on (e.g. ((1, 'Dense_0'), (2, 'Conv_1')) with freeze '^(?!Dense_1)').
  c.unfreeze = ()
  # Gradual magnitude pruning of the kernels (pruning.py, Zhu & Gupta 2017): sparsity
  # rising along a cubic from prune_start to prune_end (fractions of training), masks
  # recomputed every prune_every steps, over all kernels ('global') or per 'layer'.
  c.prune_sparsity = 0.0           # final fraction of kernel weights at zero; 0 = off
  c.prune_start = 0.0
  c.prune_end = 0.75
  c.prune_every = 50
  c.prune_scope = "global"
  # Gradient accumulation: the optimizer updates once every `accumulate_steps` steps with
  # the mean of their gradients (optax.MultiSteps), so the effective batch is
  # batch_size * accumulate_steps while memory holds one batch. Clipping, penalties and
  # the schedule act on the accumulated gradient and count optimizer updates. 1 = off.
  c.accumulate_steps = 1
  # An exponential moving average of the weights, updated after every optimizer update
  # (decay min(ema_decay, (1 + n) / (10 + n)) at update n, so early weights fade fast),
  # kept in the optimizer state. 0 = off. ema_use: 'alongside' evaluates it next to the
  # raw weights at every evaluation (validation_ema/...); 'instead' evaluates, reports,
  # picks the best checkpoint, predicts and exports with it.
  c.ema_decay = 0.0
  c.ema_use = "alongside"
  return c


def schedule_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "warmup_cosine"         # constant | cosine | warmup_cosine | step | one_cycle
  c.warmup_epochs = 0.0            # warmup_cosine...
  c.warmup_steps = 0               # ...or in steps, when > 0
  c.end_factor = 0.0               # cosine, warmup_cosine: final lr / peak lr
  c.step_fractions = (0.5, 0.75)   # step: decay at these fractions of training...
  c.step_factor = 0.1              # ...multiplying the lr by this each time
  c.one_cycle_pct_start = 0.3      # one_cycle: fraction of steps spent rising
  # Reduce on plateau, on top of any schedule: after `plateau_patience` evaluations
  # without an improvement of the monitored metric (early_stopping.metric, else the
  # task's) by more than plateau_min_delta, the learning rate is multiplied by
  # plateau_factor, down to plateau_min_scale times the schedule's. 1.0 = off.
  c.plateau_factor = 1.0
  c.plateau_patience = 2
  c.plateau_min_delta = 0.0
  c.plateau_min_scale = 1e-3
  return c


def _check_muon(opt: ml_collections.ConfigDict, prefix: str) -> str | None:
  if not 0.0 <= opt.muon_momentum < 1.0:
    return (f"{prefix}optimizer.muon_momentum={opt.muon_momentum} must be in [0, 1) "
            f"(0.95 is typical).")
  if int(opt.muon_ns_steps) != opt.muon_ns_steps or opt.muon_ns_steps < 1:
    return (f"{prefix}optimizer.muon_ns_steps={opt.muon_ns_steps} must be a whole number "
            f">= 1 (5 is typical).")
  problem = one_of(MUON_DTYPES)(opt.muon_dtype)
  if problem:
    return f"{prefix}optimizer.muon_dtype={opt.muon_dtype!r} {problem}"
  return None


@dataclasses.dataclass(frozen=True)
class Plan:
  """How long training is: what schedules are built for."""
  total_steps: int
  steps_per_epoch: int | None = None   # None: the data has no epochs


def check(opt: ml_collections.ConfigDict, sched: ml_collections.ConfigDict,
          prefix: str = "config.") -> str | None:
  """The first problem with an optimizer and schedule section, as one sentence."""
  for key, value, choices in (("optimizer.name", opt.name, OPTIMIZERS),
                              ("schedule.name", sched.name, SCHEDULES)):
    problem = one_of(choices)(value)
    if problem:
      return f"{prefix}{key}={value!r} {problem}"
  if opt.learning_rate <= 0:
    return f"{prefix}optimizer.learning_rate={opt.learning_rate} must be positive."
  if not 0.0 <= opt.momentum < 1.0:
    return f"{prefix}optimizer.momentum={opt.momentum} must be in [0, 1)."
  for key in ("weight_decay", "l1", "l2", "grad_clip_norm"):
    if opt[key] < 0:
      return f"{prefix}optimizer.{key}={opt[key]} must be >= 0."
  if opt.name == "adam" and opt.weight_decay:
    return ("Optimizer 'adam' does not decay weights; use optimizer.name='adamw' for "
            "decoupled weight decay or optimizer.l2 for an L2 penalty.")
  groups = [("no_decay", opt.no_decay), ("freeze", opt.freeze)]
  if opt.name == "muon":
    problem = _check_muon(opt, prefix)
    if problem:
      return problem
    groups.append(("muon_params", opt.muon_params))
  for group in opt.lr_groups:
    if len(group) != 2 or not isinstance(group[0], str) or group[1] < 0:
      return (f"{prefix}optimizer.lr_groups has the entry {tuple(group)!r}; give "
              f"(regex, factor) pairs with factor >= 0.")
    groups.append(("lr_groups", group[0]))
  for entry in opt.get("unfreeze", ()):
    if (len(entry) != 2 or not isinstance(entry[1], str) or
        not isinstance(entry[0], (int, float)) or entry[0] < 0):
      return (f"{prefix}optimizer.unfreeze has the entry {tuple(entry)!r}; give "
              f"(epoch, regex) pairs with epoch >= 0.")
    groups.append(("unfreeze", entry[1]))
  if opt.get("unfreeze") and not opt.freeze:
    return (f"{prefix}optimizer.unfreeze unfreezes frozen parameters; set "
            f"optimizer.freeze too (e.g. '^(?!Dense_1)' for all but the head).")
  for key, pattern in groups:
    try:
      re.compile(pattern)
    except re.error as e:
      return (f"{prefix}optimizer.{key}={pattern!r} is not a valid regular expression "
              f"({e}).")
  if int(opt.get("accumulate_steps", 1)) != opt.get("accumulate_steps", 1) or \
      opt.get("accumulate_steps", 1) < 1:
    return (f"{prefix}optimizer.accumulate_steps={opt.accumulate_steps} must be a whole "
            f"number >= 1 (1 = no accumulation).")
  if not 0.0 <= opt.get("ema_decay", 0.0) < 1.0:
    return (f"{prefix}optimizer.ema_decay={opt.ema_decay} must be in [0, 1) (0 = off; "
            f"0.999 is typical).")
  problem = one_of(EMA_USES)(opt.get("ema_use", "alongside"))
  if problem:
    return f"{prefix}optimizer.ema_use={opt.ema_use!r} {problem}"
  if sched.warmup_epochs < 0 or sched.warmup_steps < 0:
    return f"{prefix}schedule.warmup_epochs and warmup_steps must be >= 0."
  if not 0.0 < sched.get("plateau_factor", 1.0) <= 1.0:
    return (f"{prefix}schedule.plateau_factor={sched.plateau_factor} must be in (0, 1] "
            f"(1 = off).")
  if sched.get("plateau_factor", 1.0) < 1.0 and (
      sched.plateau_patience < 1 or not 0.0 < sched.plateau_min_scale <= 1.0):
    return (f"{prefix}schedule.plateau_patience must be >= 1 and plateau_min_scale in "
            f"(0, 1] (got {sched.plateau_patience} and {sched.plateau_min_scale}).")
  if not all(0 < f < 1 for f in sched.step_fractions):
    return (f"{prefix}schedule.step_fractions={tuple(sched.step_fractions)} must be "
            f"fractions of training in (0, 1).")
  from practice_jax import pruning
  return pruning.check(opt, prefix)


def build_schedule(cfg: ml_collections.ConfigDict, learning_rate: float, plan: Plan
                   ) -> optax.Schedule:
  """The learning rate as a function of the step; epochs are converted to steps here."""
  total_steps = max(plan.total_steps, 1)
  if cfg.name == "constant":
    return optax.constant_schedule(learning_rate)
  if cfg.name == "cosine":
    return optax.cosine_decay_schedule(learning_rate, total_steps, alpha=cfg.end_factor)
  if cfg.name == "warmup_cosine":
    warmup = cfg.warmup_steps or int(round(cfg.warmup_epochs * (plan.steps_per_epoch or 0)))
    warmup = min(warmup, total_steps - 1)
    return optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, warmup, total_steps, end_value=learning_rate * cfg.end_factor)
  if cfg.name == "step":
    boundaries = {int(f * total_steps): cfg.step_factor for f in cfg.step_fractions}
    return optax.piecewise_constant_schedule(learning_rate, boundaries)
  if cfg.name == "one_cycle":
    return optax.cosine_onecycle_schedule(total_steps, learning_rate,
                                          pct_start=cfg.one_cycle_pct_start)
  raise ValueError(f"unknown schedule {cfg.name!r}")  # check() catches this first


def _path(path) -> str:
  return "/".join(str(getattr(k, "key", k)) for k in path)


def path_mask(pattern: str, tree: Any, match: bool = True) -> Any:
  """A tree of bools: whether each leaf's path ('Dense_0/kernel') matches `pattern`
  (always False for an empty pattern); with `match` False, the opposite."""
  regex = re.compile(pattern) if pattern else None
  return jax.tree_util.tree_map_with_path(
      lambda path, _: (regex is not None and bool(regex.search(_path(path)))) == match,
      tree)


def decay_mask(no_decay: str):
  """A mask function: True for parameters that get weight decay and penalties."""
  return lambda params: path_mask(no_decay, params, match=False)


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
  if cfg.name == "muon":
    return muon(cfg)
  raise ValueError(f"unknown optimizer {cfg.name!r}")  # check() catches this first


def muon_labels(pattern: str):
  """A labels function: 'muon' for parameters of 2 or more dimensions whose path matches
  `pattern`, else 'adam'."""
  def labels(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, p: "muon" if p.ndim >= 2 and re.search(pattern, _path(path))
        else "adam", params)
  return labels


# The quintic Newton-Schulz coefficients of Jordan's Muon (optax's default too).
NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)


def newton_schulz(x: jax.Array, steps: int, dtype) -> jax.Array:
  """An approximation of the orthogonal factor U Vᵀ of each matrix in x [k, m, n]
  (m <= n; singular values brought to ~0.7-1.2, which serves Muon as well as exact
  orthogonalisation): `steps` quintic iterations after scaling to unit Frobenius norm.
  The iterate is kept in `dtype` and the matmuls accumulate in float32 (with bfloat16 on
  a CPU with AMX, 1.5x faster than casting a float32 iterate for each matmul)."""
  a, b, c = NEWTON_SCHULZ
  x = x.astype(jnp.float32)
  x = (x / (jnp.linalg.norm(x, axis=(-2, -1), keepdims=True) + 1e-7)).astype(dtype)
  # Written out before the matmuls: XLA:CPU would otherwise fold a transposed (tall)
  # matrix's transpose into them, and such a bfloat16 matmul goes to a kernel that
  # cannot run it ("Unsupported element type for DotThunk::Execute: BF16 x BF16 = F32").
  x = jax.lax.optimization_barrier(x)

  def mm(spec, p, q):
    return jnp.einsum(spec, p.astype(dtype), q.astype(dtype),
                      preferred_element_type=jnp.float32)
  for _ in range(steps):
    g = mm("...mn,...pn->...mp", x, x)       # x xᵀ without a transposed copy
    x = (a * x.astype(jnp.float32)
         + mm("...mp,...pn->...mn", b * g + c * mm("...mp,...pq->...mq", g, g), x)
         ).astype(dtype)
  return x.astype(jnp.float32)


def orthogonalized(steps: int, dtype, rms: float = 0.2) -> optax.GradientTransformation:
  """Muon's direction: each matrix update replaced by its Newton-Schulz orthogonal
  factor, scaled to an RMS of `rms` (Liu et al. 2025: AdamW's typical update RMS, so
  AdamW's learning rate and weight decay carry over). A convolution's kernel [..., in,
  out] is the matrix [fan in, out]. Matrices of the same shape (the layers of a stack) go
  through one batched iteration: fewer, larger matmuls."""
  def update(updates, state, params=None):
    del params
    leaves, treedef = jax.tree.flatten(updates)
    matrices = [u.reshape(-1, u.shape[-1]) for u in leaves]
    groups = {}
    for i, m in enumerate(matrices):
      wide = m.shape[0] <= m.shape[1]
      groups.setdefault((m.shape if wide else m.shape[::-1], m.dtype), []).append((i, wide))
    out = list(leaves)
    for members in groups.values():
      x = newton_schulz(jnp.stack([matrices[i] if wide else matrices[i].T
                                   for i, wide in members]), steps, dtype)
      for j, (i, wide) in enumerate(members):
        m = x[j] if wide else x[j].T
        m = m * (rms * max(m.shape) ** 0.5)
        out[i] = m.reshape(leaves[i].shape).astype(leaves[i].dtype)
    return treedef.unflatten(out), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def muon(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Muon (Jordan 2024) for the matrices `muon_params` selects, Adam for the rest.

  Jordan's Muon: Nesterov momentum (optax.trace; Jordan's exponential average up to a
  constant factor, which the orthogonalization's normalization removes) then
  `orthogonalized`. Not optax.contrib.muon, which iterates each matrix on its own in
  float32 and bias-corrects the momentum: for the char GPT's parameters (16 matrices,
  configs/shakespeare_gpt_cpu.py) its whole update (with clipping and weight decay) took
  19.2 ms on the 2-core Intel Xeon machine kind, this one 13.2 ms in float32 and 6.3 ms
  with bfloat16 matmuls (AdamW: 1.5 ms); its first step is optax's (tests/test_optim.py).
  """
  from practice_jax.models.precision import resolve_matmul_dtype
  dtype = jnp.dtype(resolve_matmul_dtype(cfg.muon_dtype))
  return optax.partition(
      {"muon": optax.chain(optax.trace(decay=cfg.muon_momentum, nesterov=True),
                           orthogonalized(cfg.muon_ns_steps, dtype)),
       "adam": optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)},
      muon_labels(cfg.muon_params))


def _group_scale(groups) -> optax.GradientTransformation:
  """Multiplies each parameter's update by the factor of the first group it matches."""
  def factors(params):
    def factor(path, _):
      name = _path(path)
      return next((float(f) for pattern, f in groups if re.search(pattern, name)), 1.0)
    return jax.tree_util.tree_map_with_path(factor, params)

  def update(updates, state, params):
    return jax.tree.map(lambda u, f: u * f, updates, factors(updates)), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _averaged_over_devices(tx: optax.GradientTransformation) -> optax.GradientTransformation:
  """`tx` applied to gradients averaged over the devices under pmap (as they are under
  jit, where XLA reduces over the sharded batch itself); the state is `tx`'s own."""
  def update(grads, state, params=None):
    axis = device_axis()
    if axis is not None:
      grads = jax.lax.pmean(grads, axis)
    return tx.update(grads, state, params)
  return optax.GradientTransformation(tx.init, update)


class PlateauState(NamedTuple):
  scale: jax.Array      # float32 scalar: the learning rate's factor, 1 until a plateau


def scale_by_plateau() -> optax.GradientTransformation:
  """Multiplies the updates by the scale in its state, which the loop lowers from
  outside when the monitored metric stops improving (reduce on plateau, driven by
  validation results; `set_plateau_scale`). Being state, it is checkpointed with the
  optimizer: a resumed run goes on at the reduced rate."""
  def init(params):
    del params
    return PlateauState(scale=jnp.ones([], jnp.float32))

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u: u * state.scale.astype(u.dtype), updates), state
  return optax.GradientTransformation(init, update)


def _nodes(tree: Any, cls: type) -> list:
  """The nodes of type `cls` (an optimizer's state tuple) anywhere in `tree`."""
  def is_node(node):
    return isinstance(node, cls)
  return [n for n in jax.tree.leaves(tree, is_leaf=is_node) if is_node(n)]


def _is_plateau(node: Any) -> bool:
  return isinstance(node, PlateauState)


def plateau_scale(state: Any) -> float | None:
  """The reduce-on-plateau scale held in a train state (None: not in use)."""
  found = _nodes(state, PlateauState)
  return float(jax.device_get(found[0].scale)) if found else None


def set_plateau_scale(state: Any, value: float) -> Any:
  """`state` with every reduce-on-plateau scale set to `value` (computed from the old
  arrays, so they keep their placement on the devices)."""
  return jax.tree.map(
      lambda n: PlateauState(n.scale * 0 + jnp.float32(value)) if _is_plateau(n) else n,
      state, is_leaf=_is_plateau)


LORA_LEAVES = ("lora_a", "lora_b")


def _is_lora(name: str) -> bool:
  return name.rsplit("/", 1)[-1] in LORA_LEAVES


def _has_lora(params: Any) -> bool:
  return any(_is_lora(_path(p)) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0])


def _unfreeze_steps(opt: ml_collections.ConfigDict, plan: Plan) -> list[tuple[int, Any]]:
  """[(step, compiled regex), ...] of optimizer.unfreeze, epochs turned into steps."""
  entries = tuple(opt.get("unfreeze", ()))
  if entries and not plan.steps_per_epoch:
    from practice_jax.errors import UserError
    raise UserError("config.optimizer.unfreeze counts in epochs and this data has none; "
                    "leave it empty.")
  return [(int(round(float(e) * plan.steps_per_epoch)), re.compile(r)) for e, r in entries]


def frozen_paths(opt: ml_collections.ConfigDict, params: Any,
                 plan: Plan | None = None) -> dict[str, int | None]:
  """{path: None (trained from the start) | step from which it trains | -1 (frozen for
  good)} for every parameter, by optimizer.freeze, optimizer.unfreeze and LoRA."""
  lora = _has_lora(params)
  regex = re.compile(opt.freeze) if opt.freeze else None
  unfreeze = _unfreeze_steps(opt, plan) if plan is not None else [
      (0, re.compile(r)) for _, r in opt.get("unfreeze", ())]
  out = {}
  for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = _path(path)
    if _is_lora(name):
      frozen = False
    elif lora:
      frozen = regex is None or bool(regex.search(name))
    else:
      frozen = regex is not None and bool(regex.search(name))
    if not frozen:
      out[name] = None
      continue
    starts = [step for step, r in unfreeze if r.search(name)]
    out[name] = min(starts) if starts else -1
  return out


def trainable_count(opt: ml_collections.ConfigDict, params: Any) -> tuple[int, int]:
  """(parameters the optimizer trains at some point, all parameters)."""
  frozen = frozen_paths(opt, params)
  total = trained = 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    n = int(np.prod(np.shape(leaf)))
    total += n
    trained += n if frozen[_path(path)] != -1 else 0
  return trained, total


def _gate(starts: Any) -> optax.GradientTransformation:
  """Multiplies each parameter's update by 0 before its step in `starts` (a function of
  the parameters giving each one's first trained step, 0 = always), by a step count kept
  in the state."""
  def init(params):
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update(updates, state, params=None):
    first = starts(updates)
    updates = jax.tree.map(lambda u, s: u * (state.count >= s).astype(u.dtype), updates, first)
    return updates, optax.ScaleByScheduleState(count=optax.safe_increment(state.count))
  return optax.GradientTransformation(init, update)


class EmaState(NamedTuple):
  count: jax.Array      # int32 scalar: optimizer updates seen
  ema: Any              # the moving average of the weights (float32), shaped as params


def ema_of_weights(decay: float) -> optax.GradientTransformation:
  """Keeps an exponential moving average of the weights after each update in its state
  (updates pass through unchanged). The decay at update n is min(decay, (1+n)/(10+n)),
  as TensorFlow's ExponentialMovingAverage with num_updates, so the average is not
  dominated by the initial weights early on."""
  def init(params):
    return EmaState(count=jnp.zeros([], jnp.int32),
                    ema=jax.tree.map(lambda p: jnp.array(p, jnp.float32, copy=True), params))

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("ema_of_weights needs the parameters")
    n = state.count.astype(jnp.float32)
    d = jnp.minimum(decay, (1.0 + n) / (10.0 + n))
    new = optax.apply_updates(params, updates)
    ema = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p.astype(jnp.float32), state.ema, new)
    return updates, EmaState(count=optax.safe_increment(state.count), ema=ema)
  return optax.GradientTransformation(init, update)


def with_ema(state: Any) -> Any:
  """`state` with its parameters replaced by their moving average (cast to each
  parameter's dtype), for evaluation; `state` itself when it keeps no average."""
  found = _nodes(state.opt_state, EmaState)
  if not found:
    return state
  params = jax.tree.map(lambda e, p: e.astype(p.dtype), found[0].ema, state.params)
  return state.replace(params=params)


EMA_SUFFIX = "_ema"   # of the evaluators' names for the moving average's results


def evaluated_weights(opt: ml_collections.ConfigDict, state: Any) -> list[tuple[str, Any]]:
  """[(suffix of the evaluators' names, state)]: the weights a run with optimizer
  config `opt` evaluates and reports: the raw ones, the raw ones and their moving
  average (ema_use='alongside'), or the average alone ('instead'). The first one gives
  the monitored metric, the best checkpoint, the artifacts and what commands load."""
  use = opt.get("ema_use", "alongside") if opt.get("ema_decay", 0.0) else None
  if use == "instead":
    return [("", with_ema(state))]
  if use == "alongside":
    return [("", state), (EMA_SUFFIX, with_ema(state))]
  return [("", state)]


def build(opt: ml_collections.ConfigDict, sched: ml_collections.ConfigDict, plan: Plan
          ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(optimizer, learning-rate schedule by step) for one model's parameters.

  With gradient accumulation (optimizer.accumulate_steps = k > 1) the chain runs inside
  optax.MultiSteps, so its schedule, warmup, unfreezing and pruning count optimizer
  updates: the plan is divided by k, and the returned schedule takes loop steps."""
  k = int(opt.get("accumulate_steps", 1))
  if k > 1:
    plan = Plan(max(1, plan.total_steps // k),
                plan.steps_per_epoch / k if plan.steps_per_epoch else None)
  tx, schedule = _build(opt, sched, plan)
  if opt.get("ema_decay", 0.0):
    tx = optax.chain(tx, ema_of_weights(opt.ema_decay))
  if k > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=k).gradient_transformation()
    inner = schedule
    schedule = lambda step: inner(step // k)  # noqa: E731 - the loop logs by step
  return _averaged_over_devices(tx), schedule


def _build(opt: ml_collections.ConfigDict, sched: ml_collections.ConfigDict, plan: Plan
           ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  schedule = build_schedule(sched, opt.learning_rate, plan)
  mask = decay_mask(opt.no_decay)
  parts = []
  if opt.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(opt.grad_clip_norm))
  if opt.l1:
    parts.append(optax.masked(add_l1_penalty(opt.l1), mask))
  if opt.l2:
    parts.append(optax.add_decayed_weights(opt.l2, mask))
  parts.append(_scale_by(opt))
  if opt.weight_decay:
    parts.append(optax.add_decayed_weights(opt.weight_decay, mask))
  parts.append(optax.scale_by_learning_rate(schedule))
  if sched.get("plateau_factor", 1.0) < 1.0:
    parts.append(scale_by_plateau())
  if opt.lr_groups:
    parts.append(_group_scale([tuple(g) for g in opt.lr_groups]))
  if opt.get("prune_sparsity", 0.0):   # last: its updates zero the pruned weights
    from practice_jax import pruning
    parts.append(pruning.from_config(opt, plan))
  tx = optax.chain(*parts)
  if opt.get("unfreeze"):
    # Gradients zeroed before the optimizer (its moments stay at zero until the parameter
    # trains) and updates after it (no weight decay either).
    def starts(params):
      frozen = frozen_paths(opt, params, plan)
      return jax.tree_util.tree_map_with_path(
          lambda path, _: max(frozen[_path(path)] or 0, 0), params)
    tx = optax.chain(_gate(starts), tx, _gate(starts))
  frozen_tx = optax.multi_transform(
      {"trained": tx, "frozen": optax.set_to_zero()},
      lambda params: jax.tree_util.tree_map_with_path(
          lambda path, _: "frozen" if frozen_paths(opt, params)[_path(path)] == -1
          else "trained", params))
  if opt.freeze:
    return frozen_tx, schedule
  # Frozen only with LoRA adapters in the tree: the state's structure says which.
  return _lora_aware(tx, frozen_tx), schedule


def _lora_aware(tx: optax.GradientTransformation, frozen_tx: optax.GradientTransformation
                ) -> optax.GradientTransformation:
  """`frozen_tx` for parameters with LoRA adapters, else `tx` (the same state as before
  LoRA existed, so older checkpoints restore)."""
  def init(params):
    return (frozen_tx if _has_lora(params) else tx).init(params)

  def update(updates, state, params=None):
    return (frozen_tx if _has_lora(updates) else tx).update(updates, state, params)
  return optax.GradientTransformation(init, update)


def keep_frozen(opt: ml_collections.ConfigDict, old: dict, new: dict) -> dict:
  """Model state (``{'batch_stats': {...}}``) `new`, with the entries of frozen layers
  taken from `old` (paths matched within each collection, as for parameters): a frozen
  layer's batch-norm statistics stay as they were."""
  if not opt.freeze:
    return new
  later = [re.compile(r) for _, r in opt.get("unfreeze", ())]

  def kept(path, _):
    name = _path(path)
    return bool(re.search(opt.freeze, name)) and not any(r.search(name) for r in later)
  return {name: jax.tree.map(lambda frozen, o, n: o if frozen else n,
                             jax.tree_util.tree_map_with_path(kept, tree), old[name], tree)
          for name, tree in new.items()}
