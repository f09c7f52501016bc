"""Tiny Shakespeare, nanoGPT's "baby GPT" (a GPU config): 6 layers, 6 heads, 384 wide,
context 256, dropout 0.2, batch 64, 5000 steps, AdamW (b2 0.99, weight decay 0.1), lr 1e-3
with 100 warmup steps and cosine decay to 1e-4, gradient clipping at 1.

    python -m practice_jax.main --config=configs/shakespeare_gpt.py

Result: not measured here (no GPU was available to this project's sessions so far;
nanoGPT reports validation loss 1.47 in about 3 minutes on one A100).
"""

from practice_jax.config_base import base_config, model_config


def get_config():
  config = base_config("language_model", "tiny_shakespeare")
  config.data.block_size = 256
  config.model = model_config("gpt", num_layers=6, num_heads=6, embed_dim=384, dropout=0.2)
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.b2 = 0.99
  config.optimizer.weight_decay = 0.1
  config.optimizer.grad_clip_norm = 1.0
  config.schedule.name = "warmup_cosine"
  config.schedule.warmup_steps = 100
  config.schedule.end_factor = 0.1
  config.batch_size = 64
  config.num_steps = 5000
  config.eval_every_steps = 250
  config.eval_batch_size = 64
  config.early_stopping.metric = "validation/loss"
  config.steps_per_dispatch = 50
  return config
