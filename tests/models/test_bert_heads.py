"""Head logits keep float32 under a bf16 compute dtype: the NSP, span and classifier
projections accumulate in float32 and hand that to the loss unrounded."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmscale.models import BertForPretraining, BertModel, ModelConfig, preset
from lmscale.models.bert_heads import BertForQuestionAnswering, BertForSequenceClassification
from lmscale.train.bench import synthetic_batch

CFG = ModelConfig.from_dict(preset("bert-tiny", vocab_size=64, max_len=16, d_model=32,
                                   num_heads=2, d_ff=64, num_layers=2, dropout=0.0,
                                   compute_dtype="bfloat16"))
BATCH = synthetic_batch(CFG, 4, 16, 3)
INPUTS = [jnp.asarray(BATCH[k]) for k in ("input_ids", "token_type_ids", "attention_mask")]


def head(x: jax.Array, params: dict) -> jax.Array:
    """A head projection as it should be: bf16 operands, float32 result, unrounded."""
    return jax.lax.dot_general(
        x.astype(jnp.bfloat16), params["kernel"].astype(jnp.bfloat16),
        (((x.ndim - 1,), (0,)), ((), ())), preferred_element_type=jnp.float32) + params["bias"]


def encoder(params: dict):
    return BertModel(CFG).apply({"params": params["bert"]}, *INPUTS)


def assert_float32_unrounded(logits: jax.Array, expected: jax.Array) -> None:
    assert logits.dtype == jnp.float32
    np.testing.assert_allclose(logits, expected, rtol=1e-6, atol=1e-6)
    # Rounded to bf16 they would all be representable in bf16; float32 ones are not.
    as_bf16 = np.asarray(logits.astype(jnp.bfloat16).astype(jnp.float32))
    assert np.mean(as_bf16 != np.asarray(logits)) > 0.5


def test_next_sentence_logits_are_float32():
    model = BertForPretraining(CFG)
    positions = jnp.asarray(BATCH["masked_lm_positions"])
    params = nn.unbox(model.init(jax.random.key(0), *INPUTS, positions))["params"]
    mlm, nsp = model.apply({"params": params}, *INPUTS, positions)
    assert mlm.dtype == jnp.float32
    _, pooled = encoder(params)
    assert pooled.dtype == jnp.bfloat16
    assert_float32_unrounded(nsp, head(pooled, params["nsp"]))


def test_span_logits_are_float32():
    model = BertForQuestionAnswering(CFG)
    params = nn.unbox(model.init(jax.random.key(0), *INPUTS))["params"]
    start, end = model.apply({"params": params}, *INPUTS)
    hidden, _ = encoder(params)
    expected = head(hidden, params["span"])
    assert_float32_unrounded(start, expected[..., 0])
    assert_float32_unrounded(end, expected[..., 1])


def test_classifier_logits_are_float32():
    model = BertForSequenceClassification(CFG, num_labels=3)
    params = nn.unbox(model.init(jax.random.key(0), *INPUTS))["params"]
    logits = model.apply({"params": params}, *INPUTS)
    _, pooled = encoder(params)
    assert_float32_unrounded(logits, head(pooled, params["classifier"]))
