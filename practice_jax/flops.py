"""Model FLOPs utilisation: the FLOPs of one train step against what the devices can do.

- FLOPs per step: XLA's own count for the task's train step at the global batch
  (``jax.jit(...).lower(...).cost_analysis()``, before optimisation: the model's
  arithmetic, forward and backward, not what a fused kernel happens to execute; so
  rematerialisation does not inflate it, as in PaLM's definition of MFU).
- Peak: ``config.peak_flops`` per device when given; else, by device kind, the dense
  bfloat16 peak of known GPUs and TPUs (the vendor's figure); else unknown, and only the
  FLOP/s is shown. A CPU has no figure to trust: a matmul timed at start-up on a shared
  machine measures its load (tried: 25 GFLOP/s at load 11 on a machine that does 526
  idle), so give config.peak_flops there (bench/step_speed.py measures the fp32 matmul
  rate side by side with the step).

MFU = FLOPs per step x steps/s / (peak x devices).
"""

from __future__ import annotations

from typing import Any, Callable

import jax

# Dense bfloat16 peak FLOP/s per device, by a substring of jax's device_kind (the first
# match wins; more specific names first).
ACCELERATOR_PEAKS = (
    ("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("L40S", 362e12),
    ("L4", 121e12), ("A10G", 70e12), ("V100", 125e12), ("T4", 65e12),
    ("TPU v6", 918e12), ("TPU v5p", 459e12), ("TPU v5", 197e12), ("TPU v4", 275e12),
    ("TPU v3", 123e12), ("TPU v2", 46e12),
)


def step_flops(train_step: Callable, state: Any, batches: Any, global_batch: int,
               traced: Any = None) -> float | None:
  """XLA's FLOP count of one `train_step` on a global batch shaped as `batches` (this
  process's [steps, rows, ...]) but with `global_batch` rows; None if XLA gives none.
  `traced`: that step already traced on a global batch (the train loop's chunk keeps its
  own, `run.traced()`): only lowered then, not traced again."""
  def spec(a):
    return jax.ShapeDtypeStruct(a.shape, a.dtype)

  def one_batch(a):
    return jax.ShapeDtypeStruct((global_batch,) + tuple(a.shape[2:]), a.dtype)
  try:
    lowered = traced.lower() if traced is not None else jax.jit(train_step).lower(
        jax.tree.map(spec, state), jax.tree.map(one_batch, batches))
    cost = lowered.cost_analysis()
  except Exception:   # noqa: BLE001 - a count is a nicety; training goes on without it
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  flops = (cost or {}).get("flops")
  return float(flops) if flops and flops > 0 else None


def device_peak(config_peak: float = 0.0) -> tuple[float | None, str]:
  """(peak FLOP/s of one device, where the figure comes from)."""
  if config_peak > 0:
    return float(config_peak), "config.peak_flops"
  kind = jax.devices()[0].device_kind
  for name, peak in ACCELERATOR_PEAKS:
    if name.lower() in kind.lower():
      return peak, f"{kind} dense bfloat16 peak"
  if jax.default_backend() == "cpu":
    return None, ("not known for a CPU: set config.peak_flops (bench/step_speed.py "
                  "measures this machine's fp32 matmul rate)")
  return None, f"not known for {kind}: set config.peak_flops"


def format_rate(flops_per_s: float) -> str:
  for unit, scale in (("PFLOP/s", 1e15), ("TFLOP/s", 1e12), ("GFLOP/s", 1e9)):
    if flops_per_s >= scale:
      return f"{flops_per_s / scale:.1f} {unit}"
  return f"{flops_per_s / 1e6:.1f} MFLOP/s"


def describe(flops: float | None, peak: float | None, source: str, devices: int) -> str:
  if flops is None:
    return "FLOPs per step: not counted by XLA for this step."
  text = f"{flops / 1e9:,.2f} GFLOPs per train step"
  if peak:
    return (text + f"; MFU against {devices} x {format_rate(peak)} ({source})")
  return text + f"; MFU: peak {source}"
