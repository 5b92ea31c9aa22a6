"""TrainConfig: architecture options by name or in `options`, refusals, config.json round trip, old layout."""

import pytest

from interp.store.errors import InputError
from sae_training.architectures import ARCHITECTURES, architecture_options
from sae_training.config import ConfigError, TrainConfig


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_architecture_round_trips_through_config_json(tmp_path, name):
    config = TrainConfig(architecture=name, d_sae=64)
    config.save(tmp_path / "config.json")
    loaded = TrainConfig.load(tmp_path / "config.json")
    assert loaded == config and loaded.config_hash() == config.config_hash()
    assert set(loaded.to_dict()["options"]) == {spec.name for spec in architecture_options(name)}


def test_options_by_name_equal_options_in_a_dict():
    assert TrainConfig(architecture="topk", k=8) == TrainConfig(architecture="topk", options={"k": 8})


def test_an_option_of_another_architecture_is_refused_naming_the_valid_ones():
    with pytest.raises(InputError, match="option k does not belong to architecture 'gated'; its options are: "
                                         "l1_coefficient, l1_warmup_steps"):
        TrainConfig(architecture="gated", k=8)


@pytest.mark.parametrize("options, shown", [({"k": "8"}, "must be an integer"), ({"k": 0}, "k must be a positive"),
                                            ({"k_schedule": "double"}, "must be one of \\['constant', 'multiply'\\]"),
                                            ({"aux_k_coefficient": float("nan")}, "finite number")])
def test_bad_option_values_are_refused(options, shown):
    with pytest.raises(InputError, match=shown):
        TrainConfig(architecture="topk", options=options)


def test_tied_resumed_as_untied_is_a_changed_config(tmp_path):
    from sae_training.config import check_same_run

    tied = TrainConfig(architecture="mfr_tied", k=4, d_sae=32)
    with pytest.raises(ConfigError, match="architecture: 'mfr_tied' -> 'topk'"):
        check_same_run(tied, TrainConfig(architecture="topk", k=4, d_sae=32))


def test_a_config_json_of_the_old_flat_layout_is_read(tmp_path):
    old = {"architecture": "relu", "d_sae": 64, "k": 32, "k_schedule": "constant", "aux_k_coefficient": 1.0,
           "jumprelu_init_threshold": 0.01, "jumprelu_bandwidth": 0.05, "sparsity_coefficient": 0.3,
           "sparsity_warmup_steps": 10}
    config = TrainConfig.from_dict(old)
    assert config.to_dict()["options"] == {"l1_coefficient": 0.3, "l1_warmup_steps": 10}
