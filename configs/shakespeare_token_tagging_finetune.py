"""Tiny Shakespeare, token classification fine-tuned from the masked character model:
configs/shakespeare_token_tagging.py (same data, model, optimizer, steps and seed)
starting from the encoder pre-trained by configs/shakespeare_masked_lm.py. Only the
``encoder/...`` parameters are taken (same paths and shapes: same vocabulary,
block_size and sizes); the tagging head starts fresh, and so do the optimizer and step.

    python -m practice_jax.main --config=configs/shakespeare_masked_lm.py \
        --workdir=runs/shakespeare_masked_lm
    python -m practice_jax.main --config=configs/shakespeare_token_tagging_finetune.py \
        --workdir=runs/shakespeare_token_tagging_finetune

(--config.init_from.workdir=DIR takes the encoder from another masked_lm run.)

Result: see the README's self-supervised section (measured on the 2-core CPU machine).
"""

import importlib.util
import os


def get_config():
  spec = importlib.util.spec_from_file_location(
      "shakespeare_token_tagging",
      os.path.join(os.path.dirname(__file__), "shakespeare_token_tagging.py"))
  scratch = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(scratch)
  config = scratch.get_config()
  config.init_from.workdir = "runs/shakespeare_masked_lm"
  config.init_from.which = "best"
  config.init_from.include = r"^encoder/"
  return config
