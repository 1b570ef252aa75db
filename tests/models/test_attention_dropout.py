"""Attention-probability dropout: the explicit attention it needs computes exactly what the
fused path does (a vanishing rate changes nothing), and a real rate changes the output
with the dropout key."""

import jax
import numpy as np
import pytest

from lmscale.models import GPT, BertForPretraining, ModelConfig, preset
from lmscale.train.bench import synthetic_batch


def model_and_inputs(family: str, attention_dropout: float):
    name = "gpt2-tiny" if family == "gpt" else "bert-tiny"
    config = ModelConfig.from_dict(preset(name, vocab_size=64, max_len=16, d_model=32,
                                          num_heads=4, d_ff=64, num_layers=2, dropout=0.0,
                                          attention_dropout=attention_dropout))
    batch = synthetic_batch(config, 2, 16, 3)
    if family == "gpt":
        return GPT(config), (batch["input_ids"],)
    batch["attention_mask"][1, 10:] = 0  # a padded row: masked keys must stay masked
    return BertForPretraining(config), (batch["input_ids"], batch["token_type_ids"],
                                        batch["attention_mask"], batch["masked_lm_positions"])


@pytest.mark.parametrize("family", ["gpt", "bert"])
def test_explicit_attention_equals_the_fused_path(family):
    model, inputs = model_and_inputs(family, 1e-12)
    params = model.init(jax.random.key(0), *inputs)
    fused = model.apply(params, *inputs, deterministic=True)
    explicit = model.apply(params, *inputs, deterministic=False,
                           rngs={"dropout": jax.random.key(1)})
    for a, b in zip(jax.tree.leaves(fused), jax.tree.leaves(explicit)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_attention_dropout_depends_on_the_key_and_is_off_at_evaluation():
    model, inputs = model_and_inputs("gpt", 0.5)
    params = model.init(jax.random.key(0), *inputs)
    first, second = (model.apply(params, *inputs, deterministic=False,
                                 rngs={"dropout": jax.random.key(k)}) for k in (1, 2))
    assert not np.allclose(first, second)
    quiet, _ = model_and_inputs("gpt", 0.0)
    np.testing.assert_array_equal(model.apply(params, *inputs),
                                  quiet.apply(params, *inputs))


def test_attention_dropout_follows_dropout_unless_set():
    assert ModelConfig.from_dict(preset("gpt2-tiny", dropout=0.2)).attention_dropout_rate == 0.2
    config = ModelConfig.from_dict(preset("gpt2-tiny", dropout=0.2, attention_dropout=0.0))
    assert config.attention_dropout_rate == 0.0
