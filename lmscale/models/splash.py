"""TPU splash attention: the Pallas kernel JAX ships (`jax.experimental.pallas.ops.tpu.
splash_attention`), the flash-attention kernel MaxText trains with on TPUs.

It computes softmax(q·kᵀ)·v block by block without materialising the [length, length]
scores, and skips the blocks a causal mask hides. What it covers here: bfloat16 or
float32, any head size, self-attention over a whole sequence whose length is a multiple
of 128 (its smallest block), either causal with no mask (GPT pretraining) or
bidirectional with a mask over the keys (BERT's padding). Keys are masked with segment
ids: every query is in segment 1 and each key in 1 (real) or 0 (padding), so each query
sees exactly the real keys, as `jax.nn.dot_product_attention` with the [batch, 1, 1,
length] mask does, padded queries included (SQuAD's loss reads their logits).

Mosaic kernels cannot be partitioned by XLA's SPMD partitioner, so the kernel runs under
`jax.shard_map` over the mesh in context: the batch split as the `batch` logical axis is,
heads as `act_heads`, each device attending over its own examples and heads whole.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import (
    splash_attention_kernel as kernel_lib,
)
from jax.experimental.pallas.ops.tpu.splash_attention import (
    splash_attention_mask as mask_lib,
)
from jax.sharding import PartitionSpec

SPLASH_DTYPES = (jnp.bfloat16, jnp.float32)
# The kernel's lane width: every block is a multiple of it. Larger blocks (MaxText's
# default is 512) amortise the per-block overhead; the largest that divides the length wins.
MIN_BLOCK = 128
BLOCK_SIZES = (512, 256, MIN_BLOCK)


def splash_supports(dtype, length: int | None) -> bool:
    """Whether the kernel can take inputs of `dtype` over sequences of `length` tokens."""
    return (jnp.dtype(dtype) in SPLASH_DTYPES and length is not None
            and length % MIN_BLOCK == 0)


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, causal: bool,
                     key_mask: jax.Array | None = None,
                     interpret: bool = False) -> jax.Array:
    """softmax(q·kᵀ/√d)·v through the splash kernel: q, k, v and the result [batch,
    length, heads, head_dim]; `key_mask` [batch, length] marks the real keys (None: all).

    `interpret` runs the kernel in Pallas's interpreter (any backend; slow: for tests).
    """
    batch_axes, head_axes = nn.logical_to_mesh_axes(("batch", "act_heads"))
    # Length and head_dim stay whole on every device: the kernel needs whole sequences.
    spec = PartitionSpec(batch_axes, None, head_axes, None)
    mask_spec = PartitionSpec(batch_axes, None)
    scale = 1 / math.sqrt(q.shape[-1])  # the kernel takes queries already scaled

    def local(q, k, v, key_mask):
        _, length, heads, _ = q.shape
        kernel = _make_kernel(heads, length, causal, interpret)
        segments = None
        if key_mask is not None:
            segments = kernel_lib.SegmentIds(q=jnp.ones(key_mask.shape, jnp.int32),
                                             kv=key_mask.astype(jnp.int32))
        # The kernel takes one example's [heads, length, head_dim]: vmap over the batch.
        y = jax.vmap(kernel)(_swap_heads((q * scale).astype(q.dtype)), _swap_heads(k),
                             _swap_heads(v), segment_ids=segments)
        return _swap_heads(y)

    if not jax.sharding.get_abstract_mesh().empty:
        # check_vma=False: pallas_call has no rule for varying-across-devices types.
        local = jax.shard_map(local, in_specs=(spec, spec, spec, mask_spec),
                              out_specs=spec, check_vma=False)
    return local(q, k, v, key_mask)


def _swap_heads(x: jax.Array) -> jax.Array:
    """[batch, length, heads, head_dim] <-> [batch, heads, length, head_dim]."""
    return jnp.swapaxes(x, 1, 2)


def _make_kernel(heads: int, length: int, causal: bool, interpret: bool):
    block = next(b for b in BLOCK_SIZES if length % b == 0)
    sizes = kernel_lib.BlockSizes(
        block_q=block, block_kv=block, block_kv_compute=block,
        block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
        block_q_dq=block, block_kv_dq=block)
    shape = (length, length)
    head_mask = mask_lib.CausalMask(shape) if causal else mask_lib.FullMask(shape)
    return kernel_lib.make_splash_mha(
        mask_lib.MultiHeadMask([head_mask] * heads), block_sizes=sizes,
        head_shards=1, q_seq_shards=1, interpret=interpret)
