"""Model FLOPs per token for our configs, the device's measured peak, and MFU."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from lmscale.models.config import ModelConfig
from lmscale.parallel.chips import chip_for_device_kind, peak_flops
from lmscale.flops import TransformerShape, palm_flops_per_token


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


def pretrain_flops_per_step(cfg: ModelConfig, batch_size: int, seq_len: int,
                            max_predictions: int) -> float:
    """Training FLOPs of one pretraining step. GPT: 6N + 12·L·T·d per token. BERT projects
    onto the vocabulary only at the `max_predictions` masked positions of each row (as
    `BertForPretraining` computes it), so the output layer and the MLM transform are
    charged there rather than to every token."""
    tokens = batch_size * seq_len
    if cfg.family == "gpt":
        return float(flops_per_token(cfg, seq_len)) * tokens
    vocab_per_position = 6 * cfg.vocab_size * cfg.d_model
    transform_per_position = 6 * (cfg.d_model * cfg.d_model)
    predictions = batch_size * max_predictions
    return (float(encoder_flops_per_token(cfg, seq_len)) * tokens
            + (vocab_per_position + transform_per_position) * predictions)


def encoder_flops_per_token(cfg: ModelConfig, seq_len: int) -> int:
    """Training FLOPs per token of an encoder without the vocabulary projection that
    `flops_per_token` counts (span and label heads never project onto the vocabulary;
    their own cost is negligible)."""
    return flops_per_token(cfg, seq_len) - 6 * cfg.vocab_size * cfg.d_model


def peak_flops_per_device(dtype: str) -> float:
    """The datasheet peak of this machine's accelerator (`parallel/chips.py`) when its
    device kind is in the chip table, else a peak measured here with a large matmul."""
    chip = chip_for_device_kind(jax.devices()[0].device_kind)
    if chip is not None:
        return peak_flops(chip, dtype)
    return measure_peak_flops(dtype)


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
