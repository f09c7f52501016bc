"""The recipe of configs/shakespeare_gpt_cpu.py at a fixed budget of steps: learning rate,
warmup, final learning rate, Adam's b2, weight decay and a weight average, minimising the
validation loss after `num_steps` (issue #21: validation <= 1.88 in half nanoGPT's time),
with the config's optimizer (Muon since 2026-12-03; AdamW when the result below was
measured: add --config.optimizer.name=adamw to repeat it).

    python -m practice_jax.sweep --config=configs/shakespeare_gpt_cpu.py \
        --sweep=sweeps/shakespeare_gpt_cpu.py --workdir=runs/sweep_gpt_cpu \
        --config.num_steps=900 --config.eval_every_steps=300 --config.optimizer.ema_use=instead

(ema_use=instead: a trial with a weight average is judged by the average's loss.) Result
on the Intel Xeon machine kind, 2026-12-02: the first 8 trials ended at validation 1.925
to 2.094 (configs/shakespeare_gpt_cpu.py's docstring).
"""

from practice_jax.sweep import choice, integer, loguniform


def get_sweep(method: str = "tpe"):
  return dict(
      method=method,
      trials=16,
      metric="validation/loss",
      space={
          "optimizer.learning_rate": loguniform(3e-3, 1.2e-2, points=3),
          "schedule.warmup_steps": integer(20, 150, log=True),
          "schedule.end_factor": choice(0.0, 0.1),
          "optimizer.b2": choice(0.95, 0.99),
          "optimizer.weight_decay": choice(0.0, 0.1),
          "optimizer.ema_decay": choice(0.0, 0.98),
      },
  )
