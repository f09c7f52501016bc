"""Runs ``python -m MODULE ARGS...`` with TFDS's mock data in place of every dataset
(random examples, no files, no network), for tests that need an entry point in a process
of its own, exactly as a user starts it:

    python tests/helpers/with_mock_tfds.py practice_jax.main --config=... --workdir=...

TensorFlow itself is not loaded here (TFDS imports it lazily), so the entry point's own
start-up (practice_jax.quiet) is what a user gets.
"""

import runpy
import sys

import tensorflow_datasets as tfds

from practice_jax.data import tfds_source

if __name__ == "__main__":
  tfds_source._hosts_reachable = lambda urls: True   # the mock needs no network
  module = sys.argv.pop(1)
  with tfds.testing.mock_data(num_examples=64):
    runpy.run_module(module, run_name="__main__", alter_sys=True)
