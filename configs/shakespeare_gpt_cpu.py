"""Tiny Shakespeare, character-level GPT at nanoGPT's CPU size: 4 layers, 4 heads, 128
wide, context 64, batch 12, no dropout, AdamW (b2 0.99, weight decay 0.1), gradient
clipping at 1, 100 warmup steps and cosine decay to a tenth, as nanoGPT's README runs it
on a CPU; but 1250 steps at lr 4e-3 instead of 2000 at 1e-3, evaluated every 250.

    python -m practice_jax.main --config=configs/shakespeare_gpt_cpu.py

Prepare the data offline first if needed (FOLDER holds input.txt):
    python -m practice_jax.data.prepare tiny_shakespeare --manual_dir=FOLDER

Result: validation loss 1.8536 (test 1.9116) after 1250 steps (seeds 1 and 2: 1.8445,
1.8517; nanoGPT's recipe, 2000 steps at 1e-3, gave 1.8690 here and 1.9047 in nanoGPT).
From process start to validation loss <= 1.88: 44.1 s (median of 39.3, 44.1, 45.4 s),
while nanoGPT's loop in PyTorch took 95.7 s (89.7, 98.2, 95.7 s) for its 2000 iterations
and never reached 1.88: 0.46 of its wall time (0.44-0.47 per pair), alternating in one
run on the 2-core AMD EPYC CPU machine (jax 0.10.2, torch 2.13.0, 2026-12-02 08:43-08:51
UTC, load average 1.5-2.0). Reproduce:
`python bench/lm_speed.py --models gpt --target_repeats 3 --torch_python=PYTHON_WITH_TORCH`
(or `python bench/time_to_target.py --config configs/shakespeare_gpt_cpu.py --metric
loss --target 1.88 --repeats 3` for this side alone).

`model.matmul_dtype="auto"`: the Dense layers' matmuls take bfloat16 inputs with float32
accumulation on CPUs with AMX-BF16 and stay float32 elsewhere (models/precision.py), so the
AMD EPYC numbers above are float32's. `model.batch_groups=3`: the batch of 12 computed as
3 independent slices in each step (models/groups.py; the same numbers; not measured on the
AMD EPYC). With both, on the Intel Xeon machine kind (2026-12-02 15:40-15:45 UTC, same
command): validation <= 1.88 in 39.2 s (38.5, 40.5, 39.2; 1.8516 at step 1250) against
57.1 s for nanoGPT's 2000 iterations, 0.69 of its wall time; train step 1.26x nanoGPT's
(45.54 vs 36.14 steps/s). Before batch_groups (validation loss at step 1250 there,
seeds 0/1/2: float32 1.8574, 1.8463, 1.8450; bfloat16 matmuls 1.8436, 1.8386, 1.8465: no
loss), "auto" alone took this config to 1.88 in 46.2 s (45.7, 46.2, 46.4)
against 65.4 s (64.6, 65.4, 66.3) for nanoGPT's 2000 iterations: 0.71 of its wall time,
its train step 1.09x nanoGPT's (35.5 vs 32.6 steps/s), alternating in one run
(2026-12-02 14:36-14:45 UTC, load average 1.8-2.1, a day when both ran ~20% slower than
the day before; then: float32 49.1 s vs 53.7 s, 0.91; bfloat16 matmuls 39.3 s vs 55.4 s,
0.71). Same command as above.

Learning rates tried (seed 0, validation loss at the last step; 1e-3 over 2000 steps:
1.8690): over 1250 steps 2e-3 1.9087, 3e-3 1.8701, 4e-3 1.8536; over 1000 steps 4e-3
1.9212, 6e-3 1.9007; 5e-3 over 1100 1.8826; 6e-3 over 1200 1.8524 (seeds 1 and 2: 1.8689,
1.8828: unstable). Over 900 steps (what half nanoGPT's time allows on the Intel kind),
8 trials of sweeps/shakespeare_gpt_cpu.py's TPE search (lr 4.3e-3 to 1.2e-2, warmup 24 to
100, final lr 0 or a tenth, b2 0.95/0.99, weight decay 0/0.1, a weight average 0/0.98)
ended at validation 1.925 to 2.094: the recipe alone does not get there.
"""

from practice_jax.config_base import base_config, model_config


def get_config():
  config = base_config("language_model", "tiny_shakespeare")
  config.data.block_size = 64
  config.model = model_config("gpt", num_layers=4, num_heads=4, embed_dim=128, dropout=0.0,
                              matmul_dtype="auto", batch_groups=3)
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 4e-3
  config.optimizer.b2 = 0.99
  config.optimizer.weight_decay = 0.1
  config.optimizer.grad_clip_norm = 1.0
  config.schedule.name = "warmup_cosine"
  config.schedule.warmup_steps = 100
  config.schedule.end_factor = 0.1
  config.batch_size = 12
  config.num_steps = 1250
  config.eval_every_steps = 250
  config.eval_batch_size = 100
  config.early_stopping.metric = "validation/loss"
  config.steps_per_dispatch = 50
  # Like nanoGPT's train.py: no samples while training (each costs ~0.5 s here); the
  # final ones are still printed and written to samples.txt.
  config.task.sampling.during_training = False
  return config
