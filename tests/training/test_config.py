"""TrainConfig from TOML: every field, the command line wins, wrong keys and types are named."""

import pytest

from features.schema import DataError
from training.config import TrainConfig


def test_every_field_reads_from_toml_and_options_override(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text(
        "[train]\nchurn_horizon = 60\nvalue_horizon = 180\nn_cutoffs = 3\ncutoff_step = 30\n"
        "persona_k_range = [2, 6]\nvalue_learning_rate = 0.2\nexperiment = 'shop-a'\n"
        "active_horizons = 3\n"
    )
    config = TrainConfig.from_toml(path, churn_horizon=28, experiment=None)
    assert config.churn_horizon == 28  # the command line wins
    assert config.value_horizon == 180 and config.n_cutoffs == 3 and config.cutoff_step == 30
    assert config.persona_k_range == (2, 6) and config.value_learning_rate == 0.2
    assert config.experiment == "shop-a" and config.active_horizons == 3.0
    assert config.to_params()["persona_k_range"] == "(2, 6)"


def test_a_flat_file_works_too(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text("n_personas = 4\n")
    assert TrainConfig.from_toml(path).n_personas == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("churn_horizn = 60", r"unknown setting\(s\) \['churn_horizn'\]"),
        ("n_cutoffs = 'four'", "n_cutoffs must be int, got 'four'"),
        ("persona_k_range = [3]", r"persona_k_range must be tuple\[int, int\]"),
        ("max_depth = 0", "max_depth must be positive"),
        ("warmup_days = 10", "warmup_days must be at least 30"),
        ("n_cutoffs = true", "n_cutoffs must be int, got True"),
        ("churn_horizon = ", "not valid TOML"),
    ],
)
def test_bad_settings_are_named(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text + "\n")
    with pytest.raises(DataError, match=message):
        TrainConfig.from_toml(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        TrainConfig.from_toml(tmp_path / "nope.toml")
