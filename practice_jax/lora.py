"""LoRA: low-rank adapters for Dense kernels (Hu et al. 2021), parameter-efficient
fine-tuning.

With ``config.lora.rank`` r > 0, every Dense kernel W (in, out) whose path matches
``config.lora.include`` gets two trainable matrices beside it in the parameter tree,
``lora_a`` (in, r) and ``lora_b`` (r, out), and the model is applied with

    W' = W + (alpha / r) * lora_a @ lora_b

(``merge``). ``lora_b`` starts at zero, so a run starts exactly at the base model. The
optimizer trains only the adapters: with LoRA leaves in the tree, every other parameter
is frozen unless ``config.optimizer.freeze`` is given, in which case only the parameters
it matches are frozen (``'^(?!Dense_1)'`` also trains the head Dense_1) — see optim.py.

``merge`` is what the tasks call before ``model.apply``; it also merges an adapted run's
parameters back into plain ones for good (``merge_state``): a run initialised from a LoRA
run (``config.init_from``) takes the merged weights.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

A, B = "lora_a", "lora_b"
LORA_STREAM = 7       # the adapters' initialisation key: fold_in(init key, 7)


def lora_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.rank = 0                          # 0 = off
  c.alpha = 8.0                       # the update is scaled by alpha / rank
  # Which 2-D Dense kernels get adapters (a regex on paths like 'Dense_0/kernel',
  # 'Block_0/CausalSelfAttention_0/qkv/kernel').
  c.include = r"(Dense_\d+|qkv|proj)/kernel$"
  return c


def _section(config) -> ml_collections.ConfigDict | None:
  """config.lora, or None when absent (a config from before LoRA existed) or off."""
  section = config.get("lora") if hasattr(config, "get") else None
  return section if section is not None and section.rank > 0 else None


def check(config: ml_collections.ConfigDict) -> str | None:
  section = config.get("lora")
  if section is None:
    return None
  if section.rank < 0:
    return f"config.lora.rank={section.rank} must be >= 0 (0 = off)."
  if section.rank and section.alpha <= 0:
    return f"config.lora.alpha={section.alpha} must be positive."
  try:
    re.compile(section.include)
  except re.error as e:
    return f"config.lora.include={section.include!r} is not a valid regular expression ({e})."
  return None


def _path(path) -> str:
  return "/".join(str(getattr(k, "key", k)) for k in path)


def adapted(params: Any, include: str) -> list[str]:
  """The paths of the kernels `include` selects (matching 2-D 'kernel' leaves)."""
  regex = re.compile(include)
  found = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = _path(path)
    if name.endswith("kernel") and regex.search(name):
      found.append((name, np.ndim(leaf)))
  bad = [n for n, d in found if d != 2]
  if bad:
    raise ValueError(f"config.lora.include matches kernels that are not 2-D Dense kernels "
                     f"({', '.join(bad)}); LoRA adapts Dense layers only.")
  return [n for n, _ in found]


def add(config: ml_collections.ConfigDict, params: Any) -> Any:
  """`params` with adapters beside each included kernel (unchanged when LoRA is off):
  lora_a ~ N(0, 1/in), lora_b = 0."""
  section = _section(config)
  if section is None:
    return params
  from practice_jax.errors import UserError
  from practice_jax.state import INIT_STREAM, stream_key
  try:
    names = adapted(params, section.include)
  except ValueError as e:
    raise UserError(str(e)) from None
  if not names:
    raise UserError(f"config.lora.include={section.include!r} matches no Dense kernel of "
                    f"the model; give a regex on paths like 'Dense_0/kernel'.")
  key = jax.random.fold_in(stream_key(config.seed, INIT_STREAM), LORA_STREAM)
  out = _copy(params)
  for i, name in enumerate(names):
    *parents, _ = name.split("/")
    node = out
    for part in parents:
      node = node[part]
    kernel = node["kernel"]
    fan_in, fan_out = kernel.shape
    node[A] = (jax.random.normal(jax.random.fold_in(key, i), (fan_in, section.rank),
                                 kernel.dtype) / np.sqrt(fan_in))
    node[B] = jnp.zeros((section.rank, fan_out), kernel.dtype)
  return out


def _copy(tree: Any) -> Any:
  return {k: _copy(v) for k, v in tree.items()} if hasattr(tree, "items") else tree


def merge(params: Any, config: ml_collections.ConfigDict | None = None,
          scale: float | None = None) -> Any:
  """Plain parameters: every kernel with adapters replaced by W + scale * A @ B, the
  adapters dropped; `scale` is alpha / rank of `config.lora` unless given. Parameters
  without adapters come back as they are (the same object)."""
  if scale is None:
    section = _section(config) if config is not None else None
    if section is None:
      return params
    scale = section.alpha / section.rank

  def walk(node):
    if not hasattr(node, "items"):
      return node
    if A in node and B in node:
      rest = {k: walk(v) for k, v in node.items() if k not in (A, B)}
      rest["kernel"] = node["kernel"] + scale * (node[A] @ node[B])
      return rest
    return {k: walk(v) for k, v in node.items()}
  return walk(params)


def count(params: Any) -> int:
  """The number of adapter parameters in `params`."""
  return sum(int(np.prod(np.shape(leaf)))
             for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
             if _path(path).rsplit("/", 1)[-1] in (A, B))
