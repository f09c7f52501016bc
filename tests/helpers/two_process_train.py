"""One of two processes of tests/test_multiprocess.py: joins the pair through a coordinator
on 127.0.0.1, trains a few steps of the MNIST MLP together with the other process, then
restores the pair's last checkpoint (all processes together) and prints a digest of the
parameters this process holds.

    python two_process_train.py PROCESS_ID PORT WORKDIR TFDS_DATA_DIR
"""

import hashlib
import json
import sys

from practice_jax import distributed


def main() -> None:
  process_id, port, workdir, data_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
  address = f"127.0.0.1:{port}"
  distributed.initialize_distributed(address, 2, process_id, timeout_s=60, bind_address=address)
  import jax
  import numpy as np

  sys.path.insert(0, str(__import__("pathlib").Path(__file__).parents[1]))
  from conftest import load_config
  from practice_jax import train
  from tests_config import two_process_config
  config = two_process_config(load_config("mnist_mlp"), data_dir)
  record = train.train_and_evaluate(config, workdir)
  _, state, step, _ = train.load_trained(workdir, "last")
  params = jax.tree.map(np.asarray, state.params)   # replicated: this process's copy
  digest = hashlib.sha256(b"".join(np.ascontiguousarray(p).tobytes()
                                   for p in jax.tree.leaves(params))).hexdigest()
  print(json.dumps({"process": jax.process_index(), "processes": jax.process_count(),
                    "devices": jax.device_count(), "step": step, "digest": digest,
                    "test_accuracy": record["final"]["test"]["accuracy"]}))


if __name__ == "__main__":
  main()
