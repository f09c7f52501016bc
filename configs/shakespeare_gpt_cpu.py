"""Tiny Shakespeare, character-level GPT at nanoGPT's CPU size: 4 layers, 4 heads, 128
wide, context 64, batch 12, 2000 steps, no dropout, AdamW (b2 0.99, weight decay 0.1),
lr 1e-3 with 100 warmup steps and cosine decay to 1e-4, gradient clipping at 1.

    python -m practice_jax.main --config=configs/shakespeare_gpt_cpu.py

Prepare the data offline first if needed (FOLDER holds input.txt):
    python -m practice_jax.data.prepare tiny_shakespeare --manual_dir=FOLDER

Result: validation loss 1.8690 (test 1.9083) after 2000 steps; validation loss <= 1.88
reached 54.3 s after process start, process exit at 58.1 s (medians of 3 runs), on the
2-core AMD EPYC CPU machine (jax 0.10.2, 2026-12-01; the code before the loop redesign,
2695c49, took 59.0 s and 63.0 s in the same session, and 51.0 s and 53.9 s on a quieter
2026-11-24). Reproduce:
`python bench/time_to_target.py --config configs/shakespeare_gpt_cpu.py --metric loss
--target 1.88 --repeats 3`.
"""

from practice_jax.config_base import base_config, model_config


def get_config():
  config = base_config("language_model", "tiny_shakespeare")
  config.data.block_size = 64
  config.model = model_config("gpt", num_layers=4, num_heads=4, embed_dim=128, dropout=0.0)
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
