"""Softmax attention in plain XLA, with matmuls that take the compute dtype in both passes.

What `attention_impl="xla"` computes (and every backend falls back to: GPT's padding and
packing masks, decoding, and every CPU). `jax.nn.dot_product_attention(implementation=
"xla")` computes the same function, but on XLA's CPU backend it is 2-3.5x slower than
this (fwd + bwd of [4, 128 or 512, 12, 64] bf16, benchmarks/cpu_attention.py): its probs·v
matmul asks for a bf16 result, which XLA:CPU runs as a float32 matmul after upcasting both
operands, and its autodiff backward multiplies float32 cotangents with bf16 operands,
float32 matmuls again. Here each matmul takes compute-dtype operands and accumulates in
float32 (as `lmscale.models.matmul` does for the projections), the softmax is float32, and
the backward pass is written out (`jax.custom_vjp`): from the saved probabilities in the
compute dtype it needs four matmuls and one elementwise pass over the scores.

Causal self-attention with no other mask (GPT pretraining) over several `CAUSAL_BLOCK`s
of tokens is computed a block of queries at a time, each against the keys up to its own
last one: the scores above the diagonal blocks are never computed or stored (3/8 of
them at 4 blocks, 7/16 at 8).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

# What masked scores are set to: the softmax gives them exactly 0 (a row with no visible
# key at all, such as a left-padding query under a causal mask, comes out uniform).
MASKED_SCORE = float(np.finfo(np.float32).min)
# Queries per block of causal attention (the TPU splash kernel's smallest block, too).
CAUSAL_BLOCK = 128


def visible_keys(q_len: int, k_len: int, mask: jax.Array | None, causal: bool,
                 q_offset: int = 0) -> jax.Array | None:
    """Which keys each query may see, broadcastable to [batch, heads, q_len, k_len]: the
    causal triangle (query i, at position `q_offset` + i, sees keys 0..q_offset + i) and
    `mask` combined; None when all are."""
    visible = None
    if causal:
        visible = jnp.arange(k_len)[None, :] <= q_offset + jnp.arange(q_len)[:, None]
    if mask is not None:
        visible = mask if visible is None else visible & mask
    return visible


def softmax_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None,
                      causal: bool) -> jax.Array:
    """softmax(q·kᵀ/√d)·v. q [b, t, h, d], k and v [b, s, h, d] in the compute dtype; `mask`
    (bool, broadcastable to [b, h, t, s]) marks the keys each query may see. Returns
    [b, t, h, d] in q's dtype."""
    return _attention(q, k, v, mask, causal)


def scaled_scores(q: jax.Array, k: jax.Array, mask: jax.Array | None, causal: bool,
                  q_offset: int = 0) -> jax.Array:
    """q·kᵀ/√d [b, h, t, s] in float32, hidden keys set to `MASKED_SCORE`."""
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    scores = scores * np.float32(1 / np.sqrt(q.shape[-1]))
    visible = visible_keys(q.shape[1], k.shape[1], mask, causal, q_offset)
    return scores if visible is None else jnp.where(visible, scores, MASKED_SCORE)


def _query_blocks(q, k, mask, causal) -> list[tuple[int, int]]:
    """(first query, end) of each block the attention is computed in: several for causal
    self-attention with no other mask over whole `CAUSAL_BLOCK`s, else one. A block's
    queries see keys up to its end."""
    length = q.shape[1]
    if (causal and mask is None and k.shape[1] == length and length % CAUSAL_BLOCK == 0
            and length > CAUSAL_BLOCK):
        return [(start, start + CAUSAL_BLOCK) for start in range(0, length, CAUSAL_BLOCK)]
    return [(0, length)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _attention(q, k, v, mask, causal):
    return _attention_forward(q, k, v, mask, causal)[0]


def _attention_forward(q, k, v, mask, causal):
    blocks = _query_blocks(q, k, mask, causal)
    probs, outs = [], []
    for start, end in blocks:
        keys = k.shape[1] if len(blocks) == 1 else end
        scores = scaled_scores(q[:, start:end], k[:, :keys], mask, causal, start)
        probs.append(jax.nn.softmax(scores, axis=-1).astype(q.dtype))
        outs.append(jnp.einsum("bhqk,bkhd->bqhd", probs[-1], v[:, :keys],
                               preferred_element_type=jnp.float32).astype(q.dtype))
    out = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=1)
    return out, (q, k, v, mask, tuple(probs), out)


def _attention_backward(causal, residuals, d_out):
    q, k, v, mask, probs, out = residuals
    blocks = _query_blocks(q, k, mask, causal)
    d_out = d_out.astype(q.dtype)
    # Softmax's backward: dS = P ∘ (dP − rowsum(P ∘ dP)), and rowsum(P ∘ dP) = rowsum(dO ∘ O).
    rows = jnp.swapaxes(jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32),
                                axis=-1), 1, 2)  # [b, h, t]
    d_q, d_k, d_v = [], [], []  # d_k, d_v: each block's, over the keys it sees
    for (start, end), block_probs in zip(blocks, probs):
        keys = k.shape[1] if len(blocks) == 1 else end
        d_out_block = d_out[:, start:end]
        d_v.append(jnp.einsum("bhqk,bqhd->bkhd", block_probs, d_out_block,
                              preferred_element_type=jnp.float32))
        d_probs = jnp.einsum("bqhd,bkhd->bhqk", d_out_block, v[:, :keys],
                             preferred_element_type=jnp.float32)
        d_scores = block_probs.astype(jnp.float32) * (d_probs - rows[..., start:end, None])
        if mask is not None:
            # Hidden scores are constants: no gradient. It is 0 already (their
            # probabilities are) but for a row the mask leaves no key, whose uniform
            # probabilities are not; the causal triangle alone always leaves one.
            d_scores = jnp.where(visible_keys(end - start, keys, mask, causal, start),
                                 d_scores, 0.0)
        d_scores = (d_scores * np.float32(1 / np.sqrt(q.shape[-1]))).astype(q.dtype)
        d_q.append(jnp.einsum("bhqk,bkhd->bqhd", d_scores, k[:, :keys],
                              preferred_element_type=jnp.float32))
        d_k.append(jnp.einsum("bhqk,bqhd->bkhd", d_scores, q[:, start:end],
                              preferred_element_type=jnp.float32))
    d_q = d_q[0] if len(d_q) == 1 else jnp.concatenate(d_q, axis=1)
    d_mask = None if mask is None else np.zeros(mask.shape, jax.dtypes.float0)
    return (d_q.astype(q.dtype), _sum_prefixes(d_k).astype(k.dtype),
            _sum_prefixes(d_v).astype(v.dtype), d_mask)


def _sum_prefixes(parts: list[jax.Array]) -> jax.Array:
    """The sum of [b, n, h, d] gradients over the first n keys each, the last over all."""
    total = parts[-1]
    for part in parts[:-1]:
        total = total.at[:, :part.shape[1]].add(part)
    return total


_attention.defvjp(_attention_forward, _attention_backward)
