"""Joining the processes of a multi-process run (``jax.distributed``), before anything
touches a device."""

from __future__ import annotations

import glob
import os

import jax


def detected_cluster() -> str | None:
  """The kind of multi-process launch this process is part of, if JAX can detect it by
  itself: 'slurm' (srun with several tasks) or 'tpu' (a Cloud TPU VM)."""
  env = os.environ
  if "SLURM_STEP_ID" in env and int(env.get("SLURM_STEP_NUM_TASKS", "1")) > 1:
    return "slurm"
  if env.get("TPU_ACCELERATOR_TYPE") or os.path.exists("/dev/accel0") or glob.glob(
      "/dev/vfio/[0-9]*"):
    return "tpu"
  return None


def initialize_distributed(coordinator_address: str | None, num_processes: int | None,
                           process_id: int | None, timeout_s: int = 300,
                           bind_address: str | None = None) -> bool:
  """Joins the processes of a multi-process run with ``jax.distributed.initialize``,
  before anything touches a device. Explicit settings win; otherwise SLURM and Cloud TPU
  launches are detected by JAX itself. Returns whether a distributed runtime started."""
  # CPU devices exchange data through gloo; GPUs and TPUs use their own collectives.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if coordinator_address is None and num_processes is None and process_id is None:
    if detected_cluster() is None:
      return False
    jax.distributed.initialize(initialization_timeout=timeout_s)
    return True
  jax.distributed.initialize(coordinator_address, num_processes, process_id,
                             initialization_timeout=timeout_s,
                             coordinator_bind_address=bind_address)
  return True
