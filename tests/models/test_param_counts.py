"""Parameter counts of the presets equal the published implementations exactly; the
vocabulary padding adds only its rows, and `lmscale params` shows it separately."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmscale.cli import main
from lmscale.models import GPT, PRESETS, BertForPretraining, BertModel, ModelConfig, preset
from lmscale.flops import param_count
from lmscale.train.throughput import transformer_shape

# Hugging Face GPT2LMHeadModel / BertModel parameter counts (tied GPT-2 head; BERT encoder
# + pooler, no pretraining heads).
PUBLISHED = {
    "gpt2": 124_439_808,
    "gpt2-medium": 354_823_168,
    "gpt2-large": 774_030_080,
    "gpt2-xl": 1_557_611_200,
    "bert-base": 109_482_240,
    "bert-large": 335_141_888,
}


def count(cfg: ModelConfig, module=None) -> int:
    ids = jnp.zeros((1, 8), jnp.int32)
    if cfg.family == "gpt":
        shapes = jax.eval_shape(lambda: GPT(cfg).init(jax.random.key(0), ids))
    elif module is BertForPretraining:
        shapes = jax.eval_shape(lambda: BertForPretraining(cfg).init(
            jax.random.key(0), ids, ids, ids, ids[:, :2]))
    else:
        shapes = jax.eval_shape(lambda: BertModel(cfg).init(jax.random.key(0), ids, ids, ids))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.unbox(shapes)))


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def unpadded(name: str) -> ModelConfig:
    return ModelConfig.from_dict(preset(name, vocab_multiple=1))


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_counts(name):
    assert count(unpadded(name)) == PUBLISHED[name]


def test_bert_pretraining_heads_add_mlm_and_nsp():
    # MLM transform d*d + d, its LayerNorm 2d, output bias V; NSP d*2 + 2 (HF BertForPreTraining).
    assert count(unpadded("bert-base"), BertForPretraining) == 110_106_428


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_accounting_matches_the_real_model(name):
    """The analytic counts used for FLOPs agree with the parameters the model creates."""
    cfg = unpadded(name)
    assert param_count(transformer_shape(cfg, cfg.max_len)).total == count(cfg)


@pytest.mark.parametrize("tensor, rows", [(1, 50_304), (2, 50_432), (4, 50_688)])
def test_vocabulary_padding_adds_only_embedding_rows(tensor, rows):
    """Megatron's rule, 128 x tensor; 50,304 at tensor 1 is nanoGPT's padded GPT-2."""
    cfg = ModelConfig.from_dict(preset("gpt2")).for_tensor_parallel(tensor)
    assert cfg.padded_vocab_size == rows and rows % (128 * tensor) == 0
    assert count(cfg) == PUBLISHED["gpt2"] + (rows - 50_257) * 768
    bert = ModelConfig.from_dict(preset("bert-base")).for_tensor_parallel(tensor)
    extra = bert.padded_vocab_size - 30_522
    assert count(bert) == PUBLISHED["bert-base"] + extra * 768
    # BertForPretraining also pads the MLM output bias.
    assert count(bert, BertForPretraining) == 110_106_428 + extra * 769


def test_params_cli_prints_published_counts_and_padding_separately(capsys):
    config = os.path.join(REPO, "configs", "gpt2_small.py")
    assert main(["params", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "gpt2_small: 124,439,808 parameters" in out
    assert "(+ 36,096 vocabulary padding: 50,304 rows at mesh.tensor=1)" in out
    assert main(["params", "--config", config, "--config.mesh.tensor=4"]) == 0
    out = capsys.readouterr().out
    assert "124,439,808 parameters" in out and "(+ 331,008 vocabulary padding" in out
    assert main(["params", "--config", os.path.join(REPO, "configs", "gpt2_tiny.py")]) == 0
    assert "padding" not in capsys.readouterr().out  # 4,096 is a multiple of 128 already
