"""Classify your own images: a folder with one sub-folder per class (or train/,
validation/, test/ folders of class folders), a batch-normalised CNN at 64x64 with AdamW.

    python -m practice_jax.main --config=configs/image_folder.py:PATH/TO/FOLDER
    python -m practice_jax.predict --workdir=runs/image_folder photo.jpg

Images of any size and mode are centre-cropped to a square and resized to
config.data.image_size (channels=1 for grey); they are decoded once and cached, so the
next run starts at once. Without split folders, 10% of each class is held out for
validation and 10% for test (data/splits.py). The class names are the folder names and
are stored with the checkpoint. For 224x224 photographs and a ResNet-18 see
configs/image_folder_resnet18.py.
"""

from practice_jax.config_base import base_config, data_config, model_config


def get_config(path: str | None = None):
  config = base_config(data="image_folder")
  config.data = data_config("image_folder", path=path, image_size=64, channels=3)
  config.model = model_config("cnn", features=(32, 64, 128), pools=("max", "max", "max"),
                              batch_norm=True, dense=(256,), dense_dropout=0.3)
  config.task.augment.crop_padding = 4
  config.task.augment.horizontal_flip = True
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.weight_decay = 5e-4
  config.schedule.name = "warmup_cosine"
  config.schedule.warmup_epochs = 1.0
  config.batch_size = 32
  config.eval_batch_size = 64
  config.num_epochs = 30.0
  config.evaluate_checkpoint = "best"
  return config
