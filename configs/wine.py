"""scikit-learn's wine recognition data (178 rows, 13 chemical measurements, 3 cultivars) as a CSV table: an MLP (one hidden layer of 64, dropout 0.1) with AdamW, trained
on the same rows as scikit-learn's models in bench/sklearn_baselines.py and tested on the
same 20%.

    python -m practice_jax.data.sklearn_sets --out=data/sklearn      # once
    python -m practice_jax.main --config=configs/wine.py

Results are in the README's table of real small data sets (with scikit-learn's
LogisticRegression and MLPClassifier beside them).
"""

from practice_jax.config_base import base_config, data_config, model_config, task_config


def get_config(folder: str = "data/sklearn/wine"):
  config = base_config("table_classification", "csv", "mlp")
  config.task = task_config("table_classification")
  config.data = data_config("csv", path=f"{folder}/train.csv", test_path=f"{folder}/test.csv",
                            validation_fraction=0.0)
  config.model = model_config("mlp", hidden=(64,), activation="relu", dropout=0.1)
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.weight_decay = 1e-4
  config.schedule.name = "constant"
  config.batch_size = 16
  config.eval_batch_size = 128
  config.num_epochs = 60.0
  return config
