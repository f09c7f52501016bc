"""Tiny Shakespeare, masked character modelling (BERT's pre-training at character scale):
a 4-layer, 4-head, 128-wide bidirectional Transformer encoder over windows of 64
characters; 15% of the characters chosen per window (80% [MASK], 10% a random
character, 10% kept), cross-entropy on the chosen ones; AdamW, lr 1e-3 with 100 warmup
steps and cosine decay to 1e-4, gradient clipping at 1.

    python -m practice_jax.main --config=configs/shakespeare_masked_lm.py \
        --workdir=runs/shakespeare_masked_lm

Its encoder is what configs/shakespeare_token_tagging_finetune.py starts from (it reads
runs/shakespeare_masked_lm). Writes masked_predictions.txt: validation windows with
their masked characters filled in by the model.

Result: see the README's self-supervised section (measured on the 2-core CPU machine).
"""

from practice_jax.config_base import base_config, model_config


def get_config():
  config = base_config("masked_lm", "tiny_shakespeare")
  config.data.block_size = 64
  config.model = model_config("bert", num_layers=4, num_heads=4, embed_dim=128,
                              dropout=0.0)
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.b2 = 0.99
  config.optimizer.weight_decay = 0.1
  config.optimizer.grad_clip_norm = 1.0
  config.schedule.name = "warmup_cosine"
  config.schedule.warmup_steps = 100
  config.schedule.end_factor = 0.1
  config.batch_size = 32
  config.num_steps = 1500
  config.eval_every_steps = 500
  config.eval_batch_size = 100
  config.evaluate_checkpoint = "best"
  config.steps_per_dispatch = 50
  return config
