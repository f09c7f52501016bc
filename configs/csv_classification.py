"""Classify the rows of your own CSV table: a small MLP with AdamW.

    python -m practice_jax.main --config=configs/csv_classification.py:train.csv
    python -m practice_jax.main --config=configs/csv_classification.py \
        --config.data.path=train.csv --config.data.label_column=species

The label column (default `label`) holds the class of each row; the other columns are
features, numeric or categorical (data/tables.py says how each is read, encoded and
standardised, and how missing values are filled). Without --config.data.validation_path
and test_path, 10% of the rows (per class) are held out for validation and 10% for test.
Two classes use one output and the sigmoid cross-entropy. Then

    python -m practice_jax.predict --workdir=runs/csv_classification rows.csv

writes the predicted class and each class's probability for every row.
"""

from practice_jax.config_base import base_config, data_config, model_config, task_config


def get_config(path: str | None = None):
  config = base_config("table_classification", "csv", "mlp")
  config.task = task_config("table_classification")
  config.data = data_config("csv", path=path)
  config.model = model_config("mlp", hidden=(64, 64), activation="relu", dropout=0.1)
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.weight_decay = 1e-4
  config.schedule.name = "constant"
  config.batch_size = 32
  config.eval_batch_size = 256
  config.num_epochs = 100.0
  config.evaluate_checkpoint = "best"
  return config
