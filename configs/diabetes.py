"""scikit-learn's diabetes data (442 patients, 10 baseline measurements, disease
progression a year later) as a CSV table: linear regression by gradient descent, the
same model as scikit-learn's LinearRegression (least squares) in
bench/sklearn_baselines.py, on the same rows, tested on the same 20%.

    python -m practice_jax.data.sklearn_sets --out=data/sklearn      # once
    python -m practice_jax.main --config=configs/diabetes.py

Results are in the README's table of real small data sets.
"""

from practice_jax.config_base import base_config, data_config, model_config


def get_config(folder: str = "data/sklearn/diabetes"):
  config = base_config("regression", "csv", "mlp")
  config.data = data_config("csv", path=f"{folder}/train.csv", test_path=f"{folder}/test.csv",
                            target="number", validation_fraction=0.0)
  config.model = model_config("mlp", hidden=())
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-2
  config.schedule.name = "cosine"
  config.batch_size = 32
  config.eval_batch_size = 128
  config.num_epochs = 200.0
  return config
