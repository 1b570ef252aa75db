"""Parameter counts of the presets equal the published implementations exactly."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmscale.models import GPT, PRESETS, BertForPretraining, BertModel, ModelConfig, preset
from lmscale.scaling.flops import param_count
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


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_counts(name):
    assert count(ModelConfig.from_dict(preset(name))) == PUBLISHED[name]


def test_bert_pretraining_heads_add_mlm_and_nsp():
    cfg = ModelConfig.from_dict(preset("bert-base"))
    # MLM transform d*d + d, its LayerNorm 2d, output bias V; NSP d*2 + 2 (HF BertForPreTraining).
    assert count(cfg, BertForPretraining) == 110_106_428


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_accounting_matches_the_real_model(name):
    """The analytic counts used for FLOPs agree with the parameters the model creates."""
    cfg = ModelConfig.from_dict(preset(name))
    assert param_count(transformer_shape(cfg, cfg.max_len)).total == count(cfg)
