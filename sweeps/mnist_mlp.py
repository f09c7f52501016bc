"""Learning rate x weight decay x dropout for configs/mnist_mlp.py.

    python -m practice_jax.sweep --config=configs/mnist_mlp.py --sweep=sweeps/mnist_mlp.py \
        --workdir=runs/sweep_mnist_mlp_tpe --config.num_epochs=1

`--sweep=sweeps/mnist_mlp.py:grid` (or `:random`) chooses the method; `--trials=N` the
budget. Grid search tries the `points` of each range (3 x 3 x 2 = 18 points, of which the
budget runs the first `trials`, in a random order).
"""

from practice_jax.sweep import loguniform, uniform


def get_sweep(method: str = "tpe"):
  return dict(
      method=method,
      trials=8,
      metric="validation/accuracy",
      space={
          "optimizer.learning_rate": loguniform(3e-4, 1e-2, points=3),
          "optimizer.weight_decay": loguniform(1e-5, 1e-1, points=3),
          "model.dropout": uniform(0.0, 0.5, points=2),
      },
  )
