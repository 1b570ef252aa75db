"""Parameter and FLOP accounting against the published implementations' exact counts."""

import pytest

from lmscale.errors import InputError
from lmscale.flops import (
    EncoderDecoderShape,
    TransformerShape,
    encoder_decoder_param_count,
    kaplan_flops_per_token,
    model_flops_utilization,
    palm_flops_per_token,
    param_count,
)


def gpt2(d: int, layers: int, heads: int, **overrides) -> TransformerShape:
    return TransformerShape(
        vocab_size=50_257, context=1_024, d_model=d, layers=layers, heads=heads, **overrides
    )


def bert(d: int, layers: int, heads: int, **overrides) -> TransformerShape:
    return TransformerShape(
        vocab_size=30_522,
        context=512,
        d_model=d,
        layers=layers,
        heads=heads,
        type_vocab=2,
        final_norm=False,
        embedding_norm=True,
        pooler=True,
        **overrides,
    )


GPT2_SMALL = gpt2(768, 12, 12)


@pytest.mark.parametrize(
    "shape, total",
    [
        (GPT2_SMALL, 124_439_808),
        (gpt2(1024, 24, 16), 354_823_168),
        (gpt2(1280, 36, 20), 774_030_080),
        (gpt2(1600, 48, 25), 1_557_611_200),
        (bert(768, 12, 12), 109_482_240),
        (bert(1024, 24, 16), 335_141_888),
    ],
    ids=["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "bert-base", "bert-large"],
)
def test_total_matches_released_checkpoints(shape, total):
    assert param_count(shape).total == total


def test_embedding_split_follows_kaplan():
    count = param_count(GPT2_SMALL)
    assert count.embedding == 50_257 * 768 + 1_024 * 768  # wte + wpe
    assert count.non_embedding == 85_056_000


def test_bert_pretraining_heads():
    # BertForPreTraining (MLM transform + LayerNorm + vocab bias, NSP) on bert-base.
    with_heads = param_count(bert(768, 12, 12, mlm_head=True, nsp_head=True))
    assert with_heads.total == 110_106_428
    assert with_heads.embedding == param_count(bert(768, 12, 12)).embedding


def test_untied_head_is_counted_as_embedding():
    tied, untied = param_count(GPT2_SMALL), param_count(gpt2(768, 12, 12, tied_head=False))
    assert untied.total - tied.total == 50_257 * 768
    assert untied.non_embedding == tied.non_embedding


def test_separate_d_ff_and_head_dim():
    base = param_count(gpt2(768, 12, 12))
    wide = param_count(gpt2(768, 12, 12, d_ff=4 * 768 + 10))
    # each of 12 layers gains 10 columns in, 10 rows out and 10 biases
    assert wide.total - base.total == 12 * (10 * 768 * 2 + 10)
    narrow = param_count(gpt2(768, 12, 12, head_dim=32))  # attention width 384, not 768
    assert base.total - narrow.total == 12 * (4 * 768 * 384 + 3 * 384)


@pytest.mark.parametrize(
    "shape, total",
    [
        (EncoderDecoderShape(32_128, 512, 8, 64, 2_048, 6, 6), 60_506_624),
        (EncoderDecoderShape(32_128, 1_024, 16, 64, 4_096, 24, 24), 737_668_096),
    ],
    ids=["t5-small", "t5-large"],
)
def test_encoder_decoder_matches_t5_checkpoints(shape, total):
    assert encoder_decoder_param_count(shape).total == total


def test_training_flops_per_token():
    assert kaplan_flops_per_token(GPT2_SMALL) == 6 * 85_056_000
    # matmul parameters = non-embedding + the tied output projection: nanoGPT's N for gpt2
    matmul_params = 85_056_000 + 50_257 * 768
    assert matmul_params == 123_653_376
    expected = 6 * matmul_params + 12 * 12 * 1_024 * 768
    assert palm_flops_per_token(GPT2_SMALL) == expected


def test_model_flops_utilization():
    assert model_flops_utilization(1e9, 250.0, 1e12) == pytest.approx(0.25)
    with pytest.raises(InputError, match="peak"):
        model_flops_utilization(1e9, 250.0, 0.0)


def test_bad_shapes_are_input_errors():
    with pytest.raises(InputError, match="layers"):
        gpt2(768, 0, 12)
    with pytest.raises(InputError, match="head_dim"):
        gpt2(770, 12, 12)
