"""Tiny Shakespeare with a plain (Elman) recurrent network: 2 layers of 128 tanh units
(h = tanh(W x + U h + b)), otherwise configs/shakespeare_lstm.py's char-rnn settings
(sequences of 50, batch 50, RMSprop 2e-3, gradients clipped to global norm 5), so the
two compare: what the LSTM's gates buy.

    python -m practice_jax.main --config=configs/shakespeare_rnn.py

Result: validation loss 1.6376 (test 1.7162) after 5000 steps, against the LSTM's 1.5642
(1.6489); 89 s wall time from process start, on the 2-core AMD EPYC CPU machine while
other jobs shared it (load average about 3), jax 0.10.2, seed 0, 2026-12-01.
"""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "shakespeare_lstm", os.path.join(os.path.dirname(__file__), "shakespeare_lstm.py"))
_lstm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_lstm)


def get_config():
  config = _lstm.get_config()
  config.model.cell = "simple"
  return config
