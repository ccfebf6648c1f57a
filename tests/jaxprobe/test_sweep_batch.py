"""model.batch_size: 0 (the default and the demo's) means each model's own dump batch size."""
import pytest

from jaxprobe.studies.sweep.config import ConfigError, load_sweep_config


def test_batch_size_zero_is_the_models_own_by_default_and_in_the_demo():
    assert load_sweep_config({})["model"]["batch_size"] == 0
    assert load_sweep_config("demo")["model"]["batch_size"] == 0
    assert load_sweep_config({"model": {"batch_size": 4}})["model"]["batch_size"] == 4
    with pytest.raises(ConfigError, match="'model.batch_size' must be an int >= 0 \\(0 = the model's own\\); got -3"):
        load_sweep_config({"model": {"batch_size": -3}})
