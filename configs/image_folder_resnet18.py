"""Your own photographs at 224x224 with ResNet-18 as in the ImageNet paper (7x7 stride-2
stem and max-pool, ImageNet normalisation), SGD with Nesterov momentum: the PyTorch
`ImageFolder` + `resnet18` recipe.

    python -m practice_jax.main --config=configs/image_folder_resnet18.py:PATH/TO/FOLDER

The folder layout is that of configs/image_folder.py. Not measured here (no photograph
folder on this CPU machine; a 224x224 ResNet-18 wants a GPU).
"""

from practice_jax.config_base import base_config, data_config, model_config


def get_config(path: str | None = None):
  config = base_config(data="image_folder")
  config.data = data_config("image_folder", path=path, image_size=224, channels=3,
                            normalization="imagenet")
  config.model = model_config("resnet", stage_sizes=(2, 2, 2, 2), width=64, stem="imagenet")
  config.task.augment.crop_padding = 16
  config.task.augment.horizontal_flip = True
  config.optimizer.name = "sgd"
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = True
  config.optimizer.learning_rate = 0.05
  config.optimizer.l2 = 1e-4
  config.schedule.name = "warmup_cosine"
  config.schedule.warmup_epochs = 1.0
  config.batch_size = 64
  config.eval_batch_size = 64
  config.num_epochs = 30.0
  config.evaluate_checkpoint = "best"
  return config
