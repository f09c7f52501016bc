"""Joining the processes of a multi-process run (``jax.distributed``), before anything
touches a device."""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping

import jax

from practice_jax.errors import UserError


def on_cloud_tpu_vm() -> bool:
  """Whether JAX itself will find a Cloud TPU cluster here: libtpu installed and TPU chips
  on the PCI bus (what ``jax`` checks when imported), and the workers named by the VM's
  metadata server or by GKE's variables. Asking JAX's own cluster classes keeps this in
  step with ``jax.distributed.initialize()``, which would otherwise fail
  (``coordinator_address should be defined``) on a host this test took for a TPU VM."""
  from jax._src.clusters import cloud_tpu_cluster
  return (cloud_tpu_cluster.GkeTpuCluster.is_env_present() or
          cloud_tpu_cluster.GceTpuCluster.is_env_present())


def detected_cluster(env: Mapping[str, str] = os.environ) -> str | None:
  """The kind of multi-process launch this process is part of, if JAX can detect it by
  itself: 'slurm' (srun with several tasks) or 'tpu' (a Cloud TPU VM)."""
  if "SLURM_STEP_ID" in env and int(env.get("SLURM_STEP_NUM_TASKS", "1")) > 1:
    return "slurm"
  if on_cloud_tpu_vm():
    return "tpu"
  return None


def _has_nvidia_gpu() -> bool:
  # The device files JAX's own GPU check looks for (jax/_src/hardware_utils.py).
  return bool(glob.glob("/dev/nvidia[0-9]*")) or any(
      os.path.exists(path) for path in ("/dev/nvidiactl", "/dev/dxg"))


def slurm_local_device_ids(env: Mapping[str, str] = os.environ) -> list[int] | None:
  """The GPUs this process of an srun step uses. With one task per node (what
  launch/gpu_cluster.sbatch starts), all the GPUs Slurm gave the step on the node: JAX's
  SLURM default, the one GPU numbered SLURM_LOCALID, fits only one task per GPU, which
  is what several tasks per node get (None: JAX's default). Raises UserError when there
  are GPUs but Slurm does not say how many this step has."""
  if int(env.get("SLURM_STEP_NUM_TASKS", "1")) != int(env.get("SLURM_STEP_NUM_NODES", "1")):
    return None
  count = env.get("SLURM_GPUS_ON_NODE") or env.get("SLURM_GPUS_PER_NODE") or ""
  count = count.rsplit(":", 1)[-1]            # "a100:8" -> "8"
  if count.isdigit() and int(count) > 0:
    return list(range(int(count)))
  if _has_nvidia_gpu():
    raise UserError(
        "Slurm does not say how many GPUs this node's process has (SLURM_GPUS_ON_NODE and "
        "SLURM_GPUS_PER_NODE are unset), so JAX would use GPU 0 only: request them with "
        "sbatch --gpus-per-node=G (or srun --gpus-per-node=G).")
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
    cluster = detected_cluster()
    if cluster is None:
      return False
    local_device_ids = slurm_local_device_ids() if cluster == "slurm" else None
    jax.distributed.initialize(initialization_timeout=timeout_s,
                               local_device_ids=local_device_ids)
    return True
  jax.distributed.initialize(coordinator_address, num_processes, process_id,
                             initialization_timeout=timeout_s,
                             coordinator_bind_address=bind_address)
  return True
