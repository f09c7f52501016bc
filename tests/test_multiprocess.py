"""Two processes on 127.0.0.1 (CPU collectives through gloo) train the MNIST MLP together:
both end with the same parameters, equal to one process taking the same global batches,
and their checkpoint restores in a single process."""

import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, load_config

sys.path.insert(0, str(REPO / "tests" / "helpers"))
from tests_config import two_process_config  # noqa: E402

pytestmark = [pytest.mark.real_data, pytest.mark.slow]   # trains MNIST in two processes


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def pair_run(real_mnist_data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("pair") / "run")
  port = str(_free_port())
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  procs = [subprocess.Popen([sys.executable, str(REPO / "tests" / "helpers" /
                                                  "two_process_train.py"),
                             str(i), port, workdir, real_mnist_data_dir],
                            cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  outputs = []
  try:
    for p in procs:   # each ends by itself: bounded by the coordinator's timeouts
      outputs.append(p.communicate(timeout=300))
  finally:
    for p in procs:
      p.kill()
  for p, (out, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  return workdir, [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]


def test_both_processes_end_with_identical_parameters(pair_run):
  _, (first, second) = pair_run
  assert (first["processes"], first["devices"], first["step"]) == (2, 2, 12)
  assert {first["process"], second["process"]} == {0, 1}
  assert first["digest"] == second["digest"]


def test_pair_equals_one_process_on_the_same_global_batches(pair_run, real_mnist_data_dir):
  """Replays the pair's global batches (process p's half from its own share of the
  training split) in this single process, and restores the pair's checkpoint here."""
  import tensorflow_datasets as tfds

  from practice_jax import train
  from practice_jax.data import tfds_source
  from practice_jax.data.in_memory import epoch_permutation
  from practice_jax.state import DATA_STREAM, stream_key

  workdir, _ = pair_run
  exp, restored, step, _ = train.load_trained(workdir, "last")   # task from checkpoint
  assert step == 12 and jax.process_count() == 1
  config = two_process_config(load_config("mnist_mlp"), real_mnist_data_dir)
  builder = tfds.builder("mnist", data_dir=real_mnist_data_dir)
  keep = 60000 - config.data.validation_size
  shards = [tfds_source.load_split(builder, tfds_source.even_split(f"train[:{keep}]", 2, p))
            for p in range(2)]
  half = config.batch_size // 2
  perm = np.asarray(epoch_permutation(stream_key(config.seed, DATA_STREAM), 0,
                                      len(shards[0]["label"])))
  # The replay's optimizer must be the run's, not the data-free stand-in's.
  exp = train.build(config)
  assert exp.plan.total_steps == 12 and exp.local_batch == config.batch_size
  state = exp.task.init_state(exp.plan)
  step_fn = jax.jit(exp.task.train_step)
  for t in range(12):
    idx = perm[t * half:(t + 1) * half]
    batch = {k: jnp.concatenate([shards[0][k][idx], shards[1][k][idx]]) for k in ("image", "label")}
    state, _ = step_fn(state, batch)
  for a, b in zip(jax.tree.leaves(restored.params), jax.tree.leaves(state.params), strict=True):
    # Adam divides by tiny second moments: reduction-order noise shows at ~1e-6.
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=2e-5)
