"""Regression on your own CSV table: linear regression by gradient descent (an MLP with
no hidden layer), mean squared error on the standardised target.

    python -m practice_jax.main --config=configs/csv_regression.py:train.csv \
        --config.data.label_column=price

Reported as MSE, MAE and R² in the target's own units, with a predicted-against-actual
plot of the test split (test_predictions.png). For a non-linear model add hidden layers:
--config.model.hidden=64,64. The columns are read as data/tables.py says.
"""

from practice_jax.config_base import base_config, data_config, model_config


def get_config(path: str | None = None):
  config = base_config("regression", "csv", "mlp")
  config.data = data_config("csv", path=path, target="number")
  config.model = model_config("mlp", hidden=())
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-2
  config.optimizer.weight_decay = 0.0
  config.schedule.name = "constant"
  config.batch_size = 32
  config.eval_batch_size = 256
  config.num_epochs = 100.0
  return config
