"""ModelConfig's padded vocabulary and the tensor-parallel sizes a shape allows, refused
at config load with the sizes that would work."""

import os

import pytest

from lmscale.cli import main
from lmscale.errors import ConfigError
from lmscale.models import ModelConfig, preset
from lmscale.models.config import check_tensor_parallel, tensor_parallel_sizes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_padded_vocab_size_rounds_up_to_the_multiple():
    gpt2 = ModelConfig.from_dict(preset("gpt2"))
    assert gpt2.vocab_multiple == 128 and gpt2.padded_vocab_size == 50_304  # nanoGPT's
    assert gpt2.for_tensor_parallel(2).padded_vocab_size == 50_432
    assert gpt2.for_tensor_parallel(4).padded_vocab_size == 50_688
    assert gpt2.for_tensor_parallel(8).vocab_multiple == 1024
    assert ModelConfig.from_dict(preset("gpt2", vocab_multiple=1)).padded_vocab_size == 50_257
    assert ModelConfig.from_dict(preset("gpt2-tiny")).padded_vocab_size == 4096  # already
    assert "vocab_multiple" in preset("bert-base")  # so configs can set it
    with pytest.raises(ConfigError, match="vocab_multiple must be >= 1"):
        ModelConfig.from_dict(preset("gpt2", vocab_multiple=0))


def test_tensor_sizes_must_divide_heads_and_mlp_width():
    xl = ModelConfig.from_dict(preset("gpt2-xl"))  # 25 heads, d_ff 6,400
    assert tensor_parallel_sizes(xl) == [1, 5, 25]
    check_tensor_parallel(xl, 5)
    with pytest.raises(ConfigError, match=r"mesh.tensor=4 must divide model.num_heads \(25\) "
                                          r"and model.d_ff \(6400\).*sizes that do: 1, 5, 25"):
        check_tensor_parallel(xl, 4)
    # d_ff counts too: 12 heads but an MLP width of 1,000 (= 2^3 x 5^3).
    odd = ModelConfig.from_dict(preset("gpt2", d_ff=1000))
    assert tensor_parallel_sizes(odd) == [1, 2, 4]
    with pytest.raises(ConfigError, match="sizes that do: 1, 2, 4"):
        check_tensor_parallel(odd, 3)
    check_tensor_parallel(ModelConfig.from_dict(preset("gpt2")), 4)  # the vocabulary never
    # blocks: 50,257 is padded
    with pytest.raises(ConfigError, match="resolve mesh.tensor=-1"):
        check_tensor_parallel(xl, -1)
    with pytest.raises(ConfigError, match="positive device count"):
        xl.for_tensor_parallel(0)


def test_an_indivisible_tensor_size_exits_2_at_config_load(capsys):
    config = os.path.join(REPO, "configs", "gpt2_xl.py")
    assert main(["params", "--config", config, "--config.mesh.tensor=4"]) == 2
    err = capsys.readouterr().err
    assert "mesh.tensor=4 must divide model.num_heads (25)" in err
    assert "sizes that do: 1, 5, 25" in err
    assert main(["params", "--config", config, "--config.mesh.tensor=5"]) == 0
    assert "1,557,611,200 parameters" in capsys.readouterr().out
    # -1 ("the remaining devices") is not resolved at load; the vocabulary alone never
    # blocks: GPT-2's 50,257 over 2 is fine.
    assert main(["params", "--config", config, "--config.mesh.tensor=-1",
                 "--config.mesh.fsdp=1"]) == 0
    assert main(["params", "--config", os.path.join(REPO, "configs", "gpt2_tiny.py"),
                 "--config.mesh.tensor=2", "--config.model.vocab_size=50257"]) == 0
