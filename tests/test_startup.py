"""practice_jax.main's start-up, before the training loop: which launches start a
distributed runtime (Cloud TPU VMs as JAX detects them, SLURM steps and their GPUs), and
SIGTERM/SIGINT handled from start-up on. No TPU, GPU or cluster: JAX's detection is fed
what those machines would show it."""

from __future__ import annotations

import glob
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
from jax._src.clusters import cloud_tpu_cluster

from conftest import REPO
from practice_jax import distributed, signals
from practice_jax.errors import UserError


@pytest.fixture
def initialize_calls(monkeypatch):
  """jax.distributed.initialize replaced by a recorder that fails the way JAX does when it
  finds no cluster to take the coordinator's address from."""
  calls = []

  def fake_initialize(*args, **kwargs):
    calls.append((args, kwargs))
    if not args and distributed.detected_cluster() is None:
      raise ValueError("coordinator_address should be defined.")

  monkeypatch.setattr(distributed.jax.distributed, "initialize", fake_initialize)
  for name in list(os.environ):
    if name.startswith(("SLURM_", "TPU_", "MEGASCALE_")):
      monkeypatch.delenv(name)
  return calls


# --- Cloud TPU VMs --------------------------------------------------------------------


def test_a_vfio_host_is_not_taken_for_a_tpu_vm(monkeypatch, initialize_calls):
  """A host with a VFIO group (GPU passthrough, say) and no TPU: a plain run, no runtime."""
  real_glob = glob.glob
  monkeypatch.setattr(glob, "glob", lambda pattern, *a, **k: (
      ["/dev/vfio/0"] if pattern.startswith("/dev/vfio") else real_glob(pattern, *a, **k)))
  assert distributed.detected_cluster() is None
  assert distributed.initialize_distributed(None, None, None) is False
  assert initialize_calls == []


def test_tpu_vm_detected_the_way_jax_detects_it(monkeypatch, initialize_calls):
  # What jax's cloud_tpu_init found at import (libtpu and TPU chips on the PCI bus) ...
  monkeypatch.setattr(cloud_tpu_cluster, "running_in_cloud_tpu_vm", False)
  monkeypatch.setenv("TPU_ACCELERATOR_TYPE", "v4-8")   # a variable alone is not a TPU VM
  assert distributed.detected_cluster() is None
  monkeypatch.setattr(cloud_tpu_cluster, "running_in_cloud_tpu_vm", True)
  # ... and the worker list: the metadata server's (GCE) ...
  monkeypatch.setattr(cloud_tpu_cluster, "get_metadata", lambda key: ("0", 200))
  assert distributed.detected_cluster() == "tpu"
  assert distributed.initialize_distributed(None, None, None) is True
  assert initialize_calls[0][1]["local_device_ids"] is None   # JAX never pins TPU devices
  # ... or GKE's variables
  monkeypatch.setattr(cloud_tpu_cluster, "get_metadata", lambda key: ("", 404))
  assert distributed.detected_cluster() is None
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "host-0,host-1")
  assert distributed.detected_cluster() == "tpu"


# --- SLURM ------------------------------------------------------------------------------

SRUN_STEP = {"SLURM_JOB_ID": "42", "SLURM_STEP_ID": "0", "SLURM_PROCID": "1", "SLURM_LOCALID": "0",
             "SLURM_STEP_NODELIST": "gpu[1-2]", "SLURM_NTASKS": "2"}


def srun_env(monkeypatch, nodes: int, tasks: int, **extra):
  for name, value in {**SRUN_STEP, "SLURM_STEP_NUM_NODES": str(nodes),
                      "SLURM_STEP_NUM_TASKS": str(tasks), **extra}.items():
    monkeypatch.setenv(name, value)


@pytest.mark.parametrize("variables, ids", [
    ({"SLURM_GPUS_ON_NODE": "4"}, [0, 1, 2, 3]),
    ({"SLURM_GPUS_PER_NODE": "h100:8"}, list(range(8))),
    ({"SLURM_GPUS_ON_NODE": "2", "SLURM_GPUS_PER_NODE": "8"}, [0, 1]),   # the step's own count
])
def test_one_process_per_node_gets_all_the_node_s_gpus(monkeypatch, initialize_calls, variables, ids):
  srun_env(monkeypatch, nodes=2, tasks=2, **variables)
  assert distributed.initialize_distributed(None, None, None) is True
  (args, kwargs), = initialize_calls
  assert args == () and kwargs["local_device_ids"] == ids   # the documented argument
  assert "JAX_LOCAL_DEVICE_IDS" not in os.environ


def test_several_processes_per_node_keep_jax_s_one_gpu_each(monkeypatch, initialize_calls):
  srun_env(monkeypatch, nodes=2, tasks=16, SLURM_GPUS_ON_NODE="8")
  distributed.initialize_distributed(None, None, None)
  assert initialize_calls[0][1]["local_device_ids"] is None   # JAX: the GPU of SLURM_LOCALID


def test_unknown_gpu_count_refuses_to_start(monkeypatch, initialize_calls):
  srun_env(monkeypatch, nodes=2, tasks=2)
  monkeypatch.setattr(distributed, "_has_nvidia_gpu", lambda: True)
  with pytest.raises(UserError) as error:
    distributed.initialize_distributed(None, None, None)
  message = str(error.value)
  assert "--gpus-per-node" in message and "GPU 0 only" in message
  assert message.count(". ") == 0 and message.endswith(".")   # one sentence
  assert initialize_calls == []
  # A CPU-only cluster has no GPUs to count: JAX runs on the CPUs.
  monkeypatch.setattr(distributed, "_has_nvidia_gpu", lambda: False)
  distributed.initialize_distributed(None, None, None)
  assert initialize_calls[0][1]["local_device_ids"] is None


def test_unknown_gpu_count_is_one_sentence_from_main(tmp_path):
  """Through python -m practice_jax.main: exit status 2, one line, no traceback."""
  env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
  env.update({**SRUN_STEP, "SLURM_STEP_NUM_NODES": "2", "SLURM_STEP_NUM_TASKS": "2"})
  wrapper = tmp_path / "run_main.py"
  wrapper.write_text(textwrap.dedent("""
      import sys
      from practice_jax import distributed, main
      distributed._has_nvidia_gpu = lambda: True   # as on a GPU node
      sys.argv[0] = "practice_jax.main"
      main.run()
      """))
  config = tiny_config(tmp_path)
  result = subprocess.run([sys.executable, str(wrapper), f"--config={config}",
                           f"--workdir={tmp_path / 'w'}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr.startswith("error: Slurm does not say how many GPUs")
  assert len(result.stderr.strip().splitlines()) == 1


# --- signals from start-up on -----------------------------------------------------------


def tiny_config(tmp_path):
  config = tmp_path / "tiny_config.py"
  config.write_text("import ml_collections\n\n"
                    "def get_config():\n  return ml_collections.ConfigDict({'seed': 0})\n")
  return config


# python -m practice_jax.main, with the loop replaced by one that receives SIGTERM while
# "loading data", then enters the loop's StopSignals and reports what it sees. The loop and
# the config check are stand-ins (sys.modules) so that only main's start-up is exercised.
STARTUP_PROBE = textwrap.dedent("""
    import os, signal, sys, time, types

    class Preempted(Exception):
      def __init__(self, message, signum):
        super().__init__(message)
        self.exit_code = 128 + signum

    def train_and_evaluate(config, workdir, config_change):
      os.kill(os.getpid(), signal.SIGTERM)   # a preemption while the data loads ...
      time.sleep(0.5)                        # ... which goes on for a while
      from practice_jax.signals import StopSignals
      with StopSignals() as stop:            # what the loop does
        signum = stop.agreed_signal(1)
        print(f"loop sees signal {signum}", flush=True)
        if signum is not None:
          raise Preempted(f"Stopped by SIGTERM at step 0", signum)

    train = types.ModuleType("practice_jax.train")
    train.train_and_evaluate, train.Preempted = train_and_evaluate, Preempted
    validation = types.ModuleType("practice_jax.validation")
    validation.validate = lambda config, device_count: None
    sys.modules.update({"practice_jax.train": train, "practice_jax.validation": validation})
    from practice_jax import main
    sys.argv[0] = "practice_jax.main"
    main.run()
    """)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.parametrize("multi_process", [False, True], ids=["one-process", "distributed"])
def test_sigterm_before_the_loop_is_the_loop_s_stop_signal(tmp_path, multi_process):
  """A SIGTERM during data loading or compilation is neither fatal on the spot (one
  process: nothing saved) nor swallowed by JAX's preemption service (jax.distributed:
  the run went on until killed): the loop stops for it at its first check and saves."""
  probe = tmp_path / "probe.py"
  probe.write_text(STARTUP_PROBE)
  args = [sys.executable, str(probe), f"--config={tiny_config(tmp_path)}",
          f"--workdir={tmp_path / 'w'}", "--compilation_cache="]
  if multi_process:   # a one-process jax.distributed runtime: JAX's preemption service runs
    args += [f"--coordinator_address=127.0.0.1:{free_port()}", "--num_processes=1",
             "--process_id=0"]
  env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JAX_"))}
  result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode == 128 + signal.SIGTERM, (result.returncode, result.stderr[-3000:])
  assert "loop sees signal 15" in result.stdout
  assert "SIGTERM received: the run saves a checkpoint" in result.stderr
  assert "Stopped by SIGTERM at step 0" in result.stderr


def test_stop_state_is_per_process_and_released(monkeypatch):
  """install() keeps a signal received before the loop; release() ends it; the next
  install() (a new run in the same process) starts without one."""
  signals.install()
  try:
    os.kill(os.getpid(), signal.SIGINT)
    assert signals.StopSignals().signum == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) == signal.SIG_DFL   # the second acts at once
    with signals.StopSignals() as stop:
      assert stop.signum == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with signals.StopSignals() as stop:
      assert stop.signum is None
      assert signal.getsignal(signal.SIGTERM) is signals._handle
  finally:
    signals.release()
  assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
