import pytest

from aigc.config import apply_overrides, from_dict, to_dict
from aigc.errors import ConfigError
from aigc.families.runs import PRESETS
from aigc.families.text.recipe import TextRunConfig, build_config, preset


def test_presets_load_and_round_trip():
    for name in PRESETS:
        cfg = preset(name)
        assert from_dict(TextRunConfig, to_dict(cfg)) == cfg


def test_dotted_overrides_are_typed():
    cfg = apply_overrides(preset("tiny"), {"model.n_layer": "3", "train.lr": "3e-4", "model.bias": "false",
                                            "train.max_minutes": "1.5", "tokenizer.vocab_size": "none"})
    assert cfg.model.n_layer == 3 and cfg.train.lr == 3e-4 and cfg.model.bias is False
    assert cfg.train.max_minutes == 1.5 and cfg.tokenizer.vocab_size is None


@pytest.mark.parametrize("overrides", [{"model.n_layers": "3"}, {"train": "1"}, {"model.n_layer": "x"},
                                       {"model.bias": "maybe"}, {"nothing.here": "1"}])
def test_bad_overrides(overrides):
    with pytest.raises(ConfigError):
        apply_overrides(preset("tiny"), overrides)


def test_unknown_keys_in_a_file_are_refused():
    with pytest.raises(ConfigError, match="unknown option 'model.depth'"):
        from_dict(TextRunConfig, {"model": {"depth": 3}})


def test_build_config_validates():
    with pytest.raises(ConfigError):
        build_config("tiny", "fortunes", {"tokenizer.kind": "word"})
    with pytest.raises(ConfigError):
        build_config("tiny", "fortunes", {"train.batch_size": "0"})
