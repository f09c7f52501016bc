"""scikit-learn's handwritten digits (1,797 8x8 grey images, UCI) as an image folder:
a small CNN with AdamW, trained on the same 1,438 images as scikit-learn's models in
bench/sklearn_baselines.py and tested on the same 359.

    python -m practice_jax.data.sklearn_sets --out=data/sklearn      # once
    python -m practice_jax.main --config=configs/digits.py

Results are in the README's table of real small data sets (with scikit-learn's
LogisticRegression and MLPClassifier beside them).
"""

from practice_jax.config_base import base_config, data_config, model_config


def get_config(path: str = "data/sklearn/digits"):
  config = base_config(data="image_folder")
  config.data = data_config("image_folder", path=path, image_size=8, channels=1,
                            validation_fraction=0.0)
  config.model = model_config("cnn", features=(32, 64), pools=("none", "max"),
                              dense=(128,), dense_dropout=0.2)
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 2e-3
  config.optimizer.weight_decay = 1e-4
  config.schedule.name = "warmup_cosine"
  config.schedule.warmup_epochs = 1.0
  config.batch_size = 32
  config.eval_batch_size = 120
  config.num_epochs = 40.0
  return config
