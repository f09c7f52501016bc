"""Data parallelism over several devices gives the single-device trajectory."""

import json
import os
import subprocess
import sys

from conftest import REPO


def test_eight_devices_train_the_same_trajectory_as_one():
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  result = subprocess.run([sys.executable, str(REPO / "tests" / "helpers" /
                                               "multi_device_equivalence.py")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  diffs = json.loads(result.stdout.strip().splitlines()[-1])
  assert diffs["steps"] == 8
  # Same batches, same dropout and augmentation keys, batch-norm statistics over the
  # global batch: only float reduction order differs.
  assert diffs["params"] < 1e-5, diffs       # measured: 3e-7
  assert diffs["batch_stats"] < 1e-5, diffs
  assert diffs["train_metrics"] < 1e-3 and diffs["eval_metrics"] < 1e-3, diffs
