"""Tiny Shakespeare, token classification from scratch (the seeds' "fine-tune BERT for
token classification", trained without pre-training as the baseline): every character
of a 64-character window tagged 'speaker' (its line names the speaker: it ends with ':'
and follows an empty line, like "First Citizen:") or 'dialogue' (data/text.py,
speaker_labels); the same 4-layer, 4-head, 128-wide encoder as
configs/shakespeare_masked_lm.py with a per-character Dense head; AdamW, lr 1e-3 with 50
warmup steps and cosine decay to 1e-4.

    python -m practice_jax.main --config=configs/shakespeare_token_tagging.py \
        --workdir=runs/shakespeare_token_tagging

Writes the per-class classification report of every test token (test_report.txt and
.json, test_confusion_matrix.png). The same run from the pre-trained encoder:
configs/shakespeare_token_tagging_finetune.py.

Result: see the README's self-supervised section (measured on the 2-core CPU machine).
"""

from practice_jax.config_base import base_config, model_config


def get_config():
  config = base_config("token_classification", "tiny_shakespeare")
  config.data.block_size = 64
  config.data.labels = "speaker"
  config.model = model_config("bert", num_layers=4, num_heads=4, embed_dim=128,
                              dropout=0.0)
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.b2 = 0.99
  config.optimizer.weight_decay = 0.1
  config.optimizer.grad_clip_norm = 1.0
  config.schedule.name = "warmup_cosine"
  config.schedule.warmup_steps = 50
  config.schedule.end_factor = 0.1
  config.batch_size = 32
  config.num_steps = 300
  config.eval_every_steps = 100
  config.eval_batch_size = 100
  config.steps_per_dispatch = 50
  return config
