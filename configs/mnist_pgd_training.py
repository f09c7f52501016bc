"""MNIST, PGD adversarial training (Madry et al. 2018) of the default CNN at epsilon 0.3:
every training batch is replaced by its PGD examples (here 7 steps of 0.075 from a random
start for 2 epochs, a CPU budget; Madry et al. train with 40 steps of 0.01 for 100k steps
of batch 50, about 83 epochs), then attacked like configs/mnist_adversarial.py (FGSM and
PGD-40 at epsilon 0.1, 0.2, 0.3 on the first 1000 test images).

    python -m practice_jax.main --config=configs/mnist_pgd_training.py

Result (seed 0, 2 epochs): 97.83% clean test accuracy; on the first 1000 test images
clean 97.8%, FGSM 95.8 / 91.7 / 85.8%, PGD-40 95.5 / 90.5 / 81.9% at epsilon 0.1 / 0.2 /
0.3; on all 10,000 test images PGD-40 at 0.3: 81.13% (Madry et al.: about 89% after
their full training). 10 min 6 s wall time from process start on the 2-core AMD EPYC CPU
machine, shared with other jobs (load average about 8; jax 0.10.2, 2026-12-01).
"""

from practice_jax.config_base import base_config, model_config


def get_config():
  config = base_config()
  config.model = model_config("cnn", features=(32, 64), pools=("avg", "avg"), dense=(256,))
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 2e-3
  config.optimizer.weight_decay = 1e-4
  config.schedule.name = "warmup_cosine"
  config.schedule.warmup_epochs = 0.5
  config.batch_size = 128
  config.num_epochs = 2.0
  config.steps_per_dispatch = 2      # each step is 8 passes, unrolled on CPU: short chunks
  config.task.adversarial_training.epsilon = 0.3
  config.task.adversarial_training.steps = 7
  config.task.adversarial_training.step_size = 0.075
  config.task.adversarial_training.random_start = True
  config.task.attacks.methods = ("fgsm", "pgd")
  config.task.attacks.epsilons = (0.1, 0.2, 0.3)
  config.task.attacks.steps = 40
  config.task.attacks.step_size = 0.01
  config.task.attacks.random_start = True
  # The first 1000 test examples (a CPU budget: PGD-40 is 41 passes per example per
  # epsilon); 0 = all 10,000.
  config.task.attacks.max_examples = 1000
  return config
