"""MNIST knowledge distillation: a small MLP (784-128-10) learns from the labels and from
the CNN of configs/mnist.py (Hinton et al. 2015: soft targets at temperature 4, weight
0.9, the labels 0.1; practice_jax/tasks/distillation.py).

The teacher is the run in ``config.task.teacher_workdir``, by default ``runs/mnist``
(where ``python -m practice_jax.main --config=configs/mnist.py`` trains it); train it first,
or point at another MNIST classifier:

    python -m practice_jax.main --config=configs/mnist.py
    python -m practice_jax.main --config=configs/mnist_distillation.py

The same student without a teacher, for comparison (same seed and epochs):

    python -m practice_jax.main --config=configs/mnist_distillation.py \\
        --config.task.alpha=0 --workdir=runs/mnist_distillation_alpha0

(alpha 0 is the plain cross-entropy on the labels, the teacher unused.)

Result, seed 0, 5 epochs, teacher configs/mnist.py trained 3 epochs (99.20% test):
97.33% test accuracy distilled (T 4, alpha 0.9), 97.33% without the teacher (alpha 0),
97.24% with T 2, alpha 0.5: no gain at this size and length. A 784-32-10 student: 94.82%
distilled, 95.54% without. 3 min 27 s wall each on the 2-core AMD EPYC CPU machine while
other jobs loaded it (jax 0.10.2, 2026-12-01).
"""

from practice_jax.config_base import base_config, model_config


def get_config():
  config = base_config(task="knowledge_distillation")
  config.task.teacher_workdir = "runs/mnist"
  config.task.temperature = 4.0
  config.task.alpha = 0.9
  config.model = model_config("mlp", hidden=(128,), activation="relu", dropout=0.0)
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.weight_decay = 1e-4
  config.schedule.name = "warmup_cosine"
  config.schedule.warmup_epochs = 0.5
  config.batch_size = 128
  config.num_epochs = 5.0
  return config
