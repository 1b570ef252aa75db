"""Config files and command-line overrides."""

import os

import pytest

from lmscale.config import apply_overrides, check_keys, load_config_file
from lmscale.errors import ConfigError
from lmscale.train.defaults import pretrain_config

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")


def load(name: str):
    return load_config_file(os.path.join(CONFIGS, name))


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(CONFIGS)
                                        if f.startswith(("gpt2_", "bert_"))))
def test_every_pretraining_recipe_uses_only_known_keys(name):
    config = load(name)
    check_keys(config, pretrain_config(config.model.preset))
    assert config.name == name[:-3]


def test_overrides_parse_to_the_field_type():
    config = load("gpt2_tiny.py")
    apply_overrides(config, ["train.steps=7", "optimizer.learning_rate=1", "model.dropout=0",
                             "data.sources=['a.txt', 'b.txt']", "data.tokenizer=tok/spm.model",
                             "data.whole_word_mask=true"])
    assert config.train.steps == 7
    assert config.optimizer.learning_rate == 1.0
    assert isinstance(config.optimizer.learning_rate, float)
    assert config.data.sources == ["a.txt", "b.txt"]
    assert config.data.tokenizer == "tok/spm.model"
    assert config.data.whole_word_mask is True


def test_unknown_keys_name_the_nearest_valid_one():
    config = load("gpt2_tiny.py")
    expected = r"unknown config key 'train.step'; did you mean 'train.steps'\?"
    with pytest.raises(ConfigError, match=expected):
        apply_overrides(config, ["train.step=3"])
    with pytest.raises(ConfigError, match="expects int"):
        apply_overrides(config, ["train.steps=many"])
    with pytest.raises(ConfigError, match="is a section"):
        apply_overrides(config, ["train=3"])
    with pytest.raises(ConfigError, match="does not exist"):
        load("no_such_config.py")
