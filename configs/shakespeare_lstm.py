"""Tiny Shakespeare, Karpathy's char-rnn defaults: a 2-layer LSTM with 128 units,
sequences of 50 characters, batch 50, RMSprop lr 2e-3 (decay 0.95), gradients clipped
to global norm 5 (char-rnn clamps each element at 5 instead).

    python -m practice_jax.main --config=configs/shakespeare_lstm.py
    (--config.model.cell=gru for a GRU)

Result: validation loss 1.5642 (test 1.6489) after 5000 steps, 127 s wall time from
process start, on the 2-core AMD EPYC CPU machine (jax 0.10.2, 2026-11-24), with Flax's
scan. The LSTM layers now run as `impl="fused"` (models/rnn.py: a hand-written backward
pass) and the batch as 2 independent slices (`batch_groups=2`, models/groups.py), the same
numbers: validation 1.5651 (test 1.6488) after 5000 steps, 168 s from process start, on
the 2-core Intel Xeon machine kind (2026-12-02 15:00 UTC, a slow day: PyTorch's char-rnn
also ran ~20% below the day before; measured with an earlier form of the split, 2 loops
inside each layer). There the fused layer's step was 1.12x Flax's scan (28.80 vs 25.61
steps/s, one run) and 2 slices made it 1.26x faster again (35.95 vs 28.50, another run):
0.89x PyTorch's `nn.LSTM` (README, the Intel section). Reproduce:
`python bench/time_to_target.py --config configs/shakespeare_lstm.py --metric loss
--target 1.6 --repeats 1` (1.6 reached at step 3500, 118.5 s).

`model.matmul_dtype="auto"` (since 2026-12-03): on a CPU with AMX-BF16 the matmuls
outside the LSTM's time loops (input projections, their gradients, the kernel gradients)
and the output layer's take bfloat16 inputs with float32 accumulation (models/rnn.py,
models/precision.py); float32 elsewhere. Validation (test) after 5000 steps on the Intel
Xeon kind, `--config.seed=S --config.model.matmul_dtype=bfloat16|float32`: seed 0
1.5637 (1.6446) vs 1.5651 (1.6488, measured 2026-12-02); seed 1 1.5685 (1.6518) vs
1.5633 (1.6389). Train step 49.8 vs 41.8 steps/s (7 alternating rounds, one process);
1.06x PyTorch's `nn.LSTM` char-rnn, median of 5 runs of `bench/lm_speed.py --models lstm`.
"""

from practice_jax.config_base import base_config, model_config


def get_config():
  config = base_config("language_model", "tiny_shakespeare")
  config.data.block_size = 50
  config.model = model_config("rnn_lm", cell="lstm", hidden=128, num_layers=2,
                              embed_dim=64, dropout=0.0, impl="fused", batch_groups=2,
                              matmul_dtype="auto")
  config.optimizer.name = "rmsprop"
  config.optimizer.learning_rate = 2e-3
  config.optimizer.rmsprop_decay = 0.95
  config.optimizer.momentum = 0.0
  config.optimizer.grad_clip_norm = 5.0
  config.schedule.name = "cosine"
  config.schedule.end_factor = 0.1
  config.batch_size = 50
  config.num_steps = 5000
  config.eval_every_steps = 500
  config.eval_batch_size = 100
  config.early_stopping.metric = "validation/loss"
  config.steps_per_dispatch = 50
  return config
