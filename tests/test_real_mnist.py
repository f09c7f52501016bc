"""End to end on the real MNIST (prepared offline from ../shared/data/mnist)."""

import pytest

from conftest import load_config
from practice_jax import train


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.parametrize("config_name", ["mnist", "mnist_mlp"])
def test_a_few_hundred_steps_on_real_mnist_beat_chance_by_far(config_name, tmp_path,
                                                              real_mnist_data_dir):
  config = load_config(config_name)
  config.data.data_dir = real_mnist_data_dir
  config.num_epochs = 300 / 429        # 300 steps of batch 128
  config.schedule.warmup_epochs = 0.1
  record = train.train_and_evaluate(config, str(tmp_path))
  assert record["steps"] == 300
  assert record["final"]["test"]["accuracy"] > 0.9
  assert record["final"]["validation"]["accuracy"] > 0.9
