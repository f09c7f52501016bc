"""Every config key practice_jax understands, with its default.

Experiment files in configs/ start from ``base_config()`` and change what they need, so
every key a user can override with ``--config.key=value`` exists, with a sensible default,
even where the experiment file does not mention it.
"""

import ml_collections


def model_config(name: str, **settings) -> ml_collections.ConfigDict:
  """config.model for model `name`: every setting of the model with its default, so each
  can be overridden from the command line, updated with `settings`."""
  from practice_jax import models  # imports flax: only when a config asks for a model
  values = models.defaults(name)
  unknown = sorted(set(settings) - set(values))
  if unknown:
    raise ValueError(f"model {name!r} has no settings {unknown}; it has {sorted(values)}")
  values.update(settings)
  return ml_collections.ConfigDict({"name": name, **values})


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = "classification"
  c.label_smoothing = 0.0

  c.data = ml_collections.ConfigDict()
  c.data.name = "mnist"
  # TFDS data directory; None means $TFDS_DATA_DIR or ~/tensorflow_datasets.
  c.data.data_dir = ml_collections.config_dict.placeholder(str)
  # A folder holding the dataset's original files (e.g. the four MNIST .gz files), for
  # preparing offline; None means <data_dir>/downloads/manual.
  c.data.manual_dir = ml_collections.config_dict.placeholder(str)
  # The last `validation_size` examples of the training split are held out for
  # validation (a fixed slice, never shuffled in); the test split is only used at the end.
  c.data.validation_size = 5000
  # Language models only: characters per training window (and the GPT's context), and
  # how many fixed windows of the validation/test text are evaluated.
  c.data.block_size = 64
  c.data.eval_windows = 500              # 0 = every non-overlapping window

  c.model = model_config("cnn")

  # Training-time augmentation, on the device, from the step's key (never at evaluation).
  c.augment = ml_collections.ConfigDict()
  c.augment.crop_padding = 0             # random crop after zero-padding by this many pixels
  c.augment.horizontal_flip = False      # random left-right mirror

  # Early stopping on a validation metric: stop after `patience` evaluations without
  # improvement (evaluations happen every epoch, or every eval_every_steps). 0 = off.
  c.early_stopping = ml_collections.ConfigDict()
  c.early_stopping.patience = 0
  c.early_stopping.metric = "accuracy"   # a validation metric: accuracy or loss
  c.early_stopping.min_delta = 0.0       # improvements smaller than this do not count
  # Which checkpoint the final test metrics and reports use: "last", or "best" (the best
  # validation value of early_stopping.metric, kept in <workdir>/best_checkpoint).
  c.evaluate_checkpoint = "last"

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adamw"             # sgd | adam | adamw | rmsprop
  c.optimizer.learning_rate = 1e-3       # peak learning rate of the schedule
  c.optimizer.momentum = 0.9             # sgd (0 = plain SGD), rmsprop
  c.optimizer.nesterov = False           # sgd with nesterov momentum
  c.optimizer.b1 = 0.9                   # adam, adamw
  c.optimizer.b2 = 0.999                 # adam, adamw
  c.optimizer.eps = 1e-8                 # adam, adamw, rmsprop
  c.optimizer.rmsprop_decay = 0.9        # rmsprop
  c.optimizer.weight_decay = 0.0         # decoupled weight decay: adamw, sgd, rmsprop
  c.optimizer.l2 = 0.0                   # L2 penalty l2/2*|w|^2: l2*w added to the gradient
  c.optimizer.l1 = 0.0                   # L1 penalty l1*|w|: l1*sign(w) added to the gradient
  # Parameters whose path ('Dense_0/bias') matches this regex are not decayed/penalised.
  c.optimizer.no_decay = r"(bias|scale)$"
  c.optimizer.grad_clip_norm = 0.0       # clip the global gradient norm; 0 = off

  c.schedule = ml_collections.ConfigDict()
  c.schedule.name = "warmup_cosine"      # constant | cosine | warmup_cosine | step | one_cycle
  c.schedule.warmup_epochs = 0.0         # warmup_cosine...
  c.schedule.warmup_steps = 0            # ...or in steps, when > 0
  c.schedule.end_factor = 0.0            # cosine, warmup_cosine: final lr / peak lr
  c.schedule.step_fractions = (0.5, 0.75)  # step: decay at these fractions of training...
  c.schedule.step_factor = 0.1           # ...multiplying the lr by this each time
  c.schedule.one_cycle_pct_start = 0.3   # one_cycle: fraction of steps spent rising

  c.batch_size = 128                     # global batch, split over all devices
  c.num_epochs = 10.0
  c.num_steps = 0                        # when > 0, train this many steps instead of epochs
  c.eval_every_steps = 0                 # validate every N steps; 0 = at every epoch end
  c.eval_batch_size = 1000
  # Train steps compiled into one call: a lax.scan; on CPU, unrolled for models with
  # convolutions (XLA:CPU runs those slowly inside loops), so compile time grows with it.
  c.steps_per_dispatch = 10
  c.log_every_steps = 100
  c.checkpoint_every_steps = 1000        # also at every epoch end and at the end
  c.keep_checkpoints = 3
  c.plots = True                         # write PNG learning curves

  # How the steps run over the devices (practice_jax/parallel.py). config.batch_size is
  # the global batch over all devices of all processes.
  c.parallel = ml_collections.ConfigDict()
  c.parallel.mode = "jit"                # jit (a device Mesh, the default) | pmap
  # (data, fsdp) devices; -1 = all the others. With fsdp > 1, every state array of at
  # least fsdp_min_size elements is split over the fsdp devices (jit mode only).
  c.parallel.mesh_shape = (-1, 1)
  c.parallel.fsdp_min_size = 2 ** 18

  # Language models: the samples written at the end of a run (samples.txt).
  c.sampling = ml_collections.ConfigDict()
  c.sampling.prompt = "\n"
  c.sampling.length = 500
  c.sampling.temperature = 0.8
  c.sampling.top_k = 40
  c.sampling.num_samples = 2
  return c
