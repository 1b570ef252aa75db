"""Model FLOPs per token for our configs, the device's measured peak, and MFU."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from lmscale.models.config import ModelConfig
from lmscale.scaling.flops import TransformerShape, palm_flops_per_token


def transformer_shape(cfg: ModelConfig, seq_len: int) -> TransformerShape:
    """The accounting shape of one of our models at a given sequence length."""
    bert = cfg.family == "bert"
    return TransformerShape(
        vocab_size=cfg.vocab_size, context=seq_len, d_model=cfg.d_model, layers=cfg.num_layers,
        heads=cfg.num_heads, d_ff=cfg.d_ff, type_vocab=cfg.type_vocab_size if bert else 0,
        final_norm=not bert, embedding_norm=bert, pooler=bert)


def flops_per_token(cfg: ModelConfig, seq_len: int) -> int:
    """Training FLOPs per token, PaLM appendix B: 6N + 12·L·T·d."""
    return palm_flops_per_token(transformer_shape(cfg, seq_len))


def measure_peak_flops(dtype: str = "float32", size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of one device on a large square matmul in `dtype` (float32 accumulation),
    the best of `repeats`: a peak measured on the spot, not a datasheet number."""
    a = jnp.ones((size, size), dtype)
    matmul = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
    matmul(a, a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best
