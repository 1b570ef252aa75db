"""Softmax attention in plain XLA, with matmuls that take the compute dtype in both passes.

What `attention_impl="xla"` computes (and every backend falls back to: GPT's padding and
packing masks, decoding, and every CPU). `jax.nn.dot_product_attention(implementation=
"xla")` computes the same function, but on XLA's CPU backend it is 2-4x slower than this
(fwd + bwd of [4, 512, 12, 64] bf16, on this repository's 2-core host): its probs·v matmul
asks for a bf16 result, which XLA:CPU runs as a float32 matmul after upcasting both
operands, and its autodiff backward multiplies float32 cotangents with bf16 operands,
float32 matmuls again. Here each matmul takes compute-dtype operands and accumulates in
float32 (as `lmscale.models.matmul` does for the projections), the softmax is float32, and
the backward pass is written out (`jax.custom_vjp`): from the saved probabilities in the
compute dtype it needs four matmuls and one elementwise pass over the scores.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

# What masked scores are set to: the softmax gives them exactly 0 (a row with no visible
# key at all, such as a left-padding query under a causal mask, comes out uniform).
MASKED_SCORE = float(np.finfo(np.float32).min)


def visible_keys(q_len: int, k_len: int, mask: jax.Array | None,
                 causal: bool) -> jax.Array | None:
    """Which keys each query may see, broadcastable to [batch, heads, q_len, k_len]: the
    causal triangle (query i sees keys 0..i) and `mask` combined; None when all are."""
    visible = None
    if causal:
        visible = jnp.arange(k_len)[None, :] <= jnp.arange(q_len)[:, None]
    if mask is not None:
        visible = mask if visible is None else visible & mask
    return visible


def softmax_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None,
                      causal: bool) -> jax.Array:
    """softmax(q·kᵀ/√d)·v. q [b, t, h, d], k and v [b, s, h, d] in the compute dtype; `mask`
    (bool, broadcastable to [b, h, t, s]) marks the keys each query may see. Returns
    [b, t, h, d] in q's dtype."""
    return _attention(q, k, v, mask, causal)


def scaled_scores(q: jax.Array, k: jax.Array, mask: jax.Array | None,
                  causal: bool) -> jax.Array:
    """q·kᵀ/√d [b, h, t, s] in float32, hidden keys set to `MASKED_SCORE`."""
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    scores = scores * np.float32(1 / np.sqrt(q.shape[-1]))
    visible = visible_keys(q.shape[1], k.shape[1], mask, causal)
    return scores if visible is None else jnp.where(visible, scores, MASKED_SCORE)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _attention(q, k, v, mask, causal):
    return _attention_forward(q, k, v, mask, causal)[0]


def _attention_forward(q, k, v, mask, causal):
    probs = jax.nn.softmax(scaled_scores(q, k, mask, causal), axis=-1).astype(q.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", probs, v,
                     preferred_element_type=jnp.float32).astype(q.dtype)
    return out, (q, k, v, mask, probs, out)


def _attention_backward(causal, residuals, d_out):
    q, k, v, mask, probs, out = residuals
    d_out = d_out.astype(q.dtype)
    d_v = jnp.einsum("bhqk,bqhd->bkhd", probs, d_out, preferred_element_type=jnp.float32)
    d_probs = jnp.einsum("bqhd,bkhd->bhqk", d_out, v, preferred_element_type=jnp.float32)
    # Softmax's backward: dS = P ∘ (dP − rowsum(P ∘ dP)), and rowsum(P ∘ dP) = rowsum(dO ∘ O).
    row = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)  # [b, t, h]
    d_scores = probs.astype(jnp.float32) * (d_probs - jnp.swapaxes(row, 1, 2)[..., None])
    # Hidden scores are constants: no gradient (it is already 0 but for a row that sees
    # no key, whose uniform probabilities are not 0).
    visible = visible_keys(q.shape[1], k.shape[1], mask, causal)
    if visible is not None:
        d_scores = jnp.where(visible, d_scores, 0.0)
    d_scores = (d_scores * np.float32(1 / np.sqrt(q.shape[-1]))).astype(q.dtype)
    d_q = jnp.einsum("bhqk,bkhd->bqhd", d_scores, k, preferred_element_type=jnp.float32)
    d_k = jnp.einsum("bhqk,bqhd->bkhd", d_scores, q, preferred_element_type=jnp.float32)
    d_mask = None if mask is None else np.zeros(mask.shape, jax.dtypes.float0)
    return d_q.astype(q.dtype), d_k.astype(k.dtype), d_v.astype(v.dtype), d_mask


_attention.defvjp(_attention_forward, _attention_backward)
