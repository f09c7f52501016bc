"""The config the two-process test trains, shared by the pair and the test's replay."""


def two_process_config(config, data_dir: str):
  config.data.data_dir = data_dir
  config.num_steps = 12
  config.eval_every_steps = 12
  config.steps_per_dispatch = 4
  config.checkpoint_every_steps = 4
  config.batch_size = 64
  config.eval_batch_size = 1000
  config.schedule.name = "constant"
  config.plots = False
  return config
