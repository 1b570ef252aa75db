"""`lmscale.models.attention`: the same function and gradients as
`jax.nn.dot_product_attention`, with every matmul of both passes in the compute dtype."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmscale.models import GPT, BertForPretraining, ModelConfig
from lmscale.models import attention
from lmscale.models.attention import softmax_attention

from jaxpr_dots import dot_generals

BATCH, LENGTH, HEADS, HEAD_DIM = 3, 8, 2, 4
# Real tokens per example; the last example is all padding (an eval batch's filler row),
# whose queries see no key at all: both implementations give them the mean of the values.
REAL = np.array([8, 5, 0])
KEY_MASK = (np.arange(LENGTH)[None, :] < REAL[:, None])[:, None, None, :]
# GPT's left padding: each query sees the real keys up to itself.
LEFT_REAL = np.arange(LENGTH)[None, :] >= (LENGTH - REAL)[:, None]
QUERY_MASK = (LEFT_REAL[:, None, :] & np.tril(np.ones((LENGTH, LENGTH), bool))
              & LEFT_REAL[:, :, None])[:, None]
# Decoding: 2 new tokens against an 8-slot cache holding 6 tokens before them.
DECODE_MASK = np.arange(LENGTH)[None, :] <= 4 + np.arange(2)[:, None]

CASES = {
    "causal": (LENGTH, None, True),
    "bert key mask": (LENGTH, KEY_MASK, False),
    "gpt left padding": (LENGTH, QUERY_MASK, False),
    "decode": (2, DECODE_MASK[None, None], False),
    "no mask": (LENGTH, None, False),
}


def _inputs(q_len, dtype, seed=0):
    kq, kk, kv, kg = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(kq, (BATCH, q_len, HEADS, HEAD_DIM), dtype)
    k, v = (jax.random.normal(key, (BATCH, LENGTH, HEADS, HEAD_DIM), dtype) for key in (kk, kv))
    return q, k, v, jax.random.normal(kg, (BATCH, q_len, HEADS, HEAD_DIM), jnp.float32)


def _reference(q, k, v, mask, causal):
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal,
                                        implementation="xla")


def _output_and_grads(attention, q, k, v, mask, causal, d_out):
    out, pull = jax.vjp(lambda q, k, v: attention(q, k, v, mask, causal), q, k, v)
    return out, pull(d_out.astype(out.dtype))


@pytest.mark.parametrize("case", CASES)
def test_float32_output_and_gradients_equal_jax_attention(case):
    q_len, mask, causal = CASES[case]
    q, k, v, d_out = _inputs(q_len, jnp.float32)
    got = _output_and_grads(softmax_attention, q, k, v, mask, causal, d_out)
    want = _output_and_grads(_reference, q, k, v, mask, causal, d_out)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    for name, g, w in zip("qkv", got[1], want[1]):
        assert g.dtype == jnp.float32, name
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=f"d{name}")


def test_causal_attention_by_query_blocks_equals_jax_attention(monkeypatch):
    """GPT's causal attention over several blocks is computed a block of queries at a time
    against the keys up to the block's end (here blocks of 4 of the 8 tokens)."""
    monkeypatch.setattr(attention, "CAUSAL_BLOCK", 4)
    q, k, v, d_out = _inputs(LENGTH, jnp.float32, seed=2)
    got = _output_and_grads(softmax_attention, q, k, v, None, True, d_out)
    want = _output_and_grads(_reference, q, k, v, None, True, d_out)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    for name, g, w in zip("qkv", got[1], want[1]):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=f"d{name}")
    # The blocks' scores: 4 queries by 4 keys, then by 8; 48 of the 64 of each head.
    scores = [e for e in dot_generals(softmax_attention, q, k, v, None, True,
                                      static_argnums=(3, 4))
              if e.params["dimension_numbers"][0] == ((3,), (3,))]  # q·kᵀ over head_dim
    assert [e.outvars[0].aval.shape[2:] for e in scores] == [(4, 4), (4, 8)]


@pytest.mark.parametrize("case", ["causal", "bert key mask"])
def test_bfloat16_close_to_float32_with_every_matmul_in_bfloat16(case):
    q_len, mask, causal = CASES[case]
    q, k, v, d_out = _inputs(q_len, jnp.float32, seed=1)
    low = [x.astype(jnp.bfloat16) for x in (q, k, v)]
    got = _output_and_grads(softmax_attention, *low, mask, causal, d_out)
    want = _output_and_grads(_reference, q, k, v, mask, causal, d_out)
    for g, w in zip([got[0], *got[1]], [want[0], *want[1]]):
        assert g.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(g, np.float32), w, rtol=0.05,
                                   atol=0.03 * float(jnp.abs(w).max()))
    # Forward: scores and probs·v; backward: dv, dprobs, dq and dk.
    dots = dot_generals(lambda *a: _output_and_grads(softmax_attention, *a, mask, causal, d_out),
                        *low)
    assert len(dots) == 6
    assert all(v.aval.dtype == jnp.bfloat16 for e in dots for v in e.invars)


@pytest.mark.parametrize("family", ["gpt", "bert"])
def test_bfloat16_model_gradients_take_no_float32_matmul(family, monkeypatch):
    """Projections (`matmul`) and attention alike: a float32 operand would send the matmul
    to XLA:CPU's float32 path, 2-3x slower than bf16's. GPT's attention goes by query
    blocks, as in pretraining at 256 tokens and more (here blocks of 4 of the 8 tokens)."""
    monkeypatch.setattr(attention, "CAUSAL_BLOCK", 4)
    cfg = ModelConfig(family=family, vocab_size=64, d_model=16, num_heads=2, num_layers=2,
                      d_ff=32, max_len=8, compute_dtype="bfloat16", dropout=0.0)
    ids = jnp.zeros((2, 8), jnp.int32)
    if family == "gpt":
        model, args = GPT(cfg), (ids,)
    else:
        positions = jnp.zeros((2, 2), jnp.int32)
        model, args = BertForPretraining(cfg), (ids, ids, jnp.ones_like(ids), positions)
    params = model.init(jax.random.key(0), *args)

    def loss(params):
        out = model.apply(params, *args)
        return sum(jnp.mean(x) for x in jax.tree.leaves(out))

    dots = dot_generals(jax.grad(loss), params)
    float32 = [e for e in dots if any(v.aval.dtype == jnp.float32 for v in e.invars)
               and all(v.aval.ndim >= 2 for v in e.invars)]
    assert len(dots) > 20
    assert not float32, f"{len(float32)} of {len(dots)} matmuls take float32"
