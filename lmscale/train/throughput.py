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


MFU_DEFINITION = (
    "MFU = model FLOPs per step / step time / peak FLOP/s of the devices. Model FLOPs: "
    "6N + 12·L·T·d per token (PaLM appendix B; BERT: the vocabulary projection only at the "
    "masked positions). Peak: the chip table's dense bf16/f32 figure for a known "
    "accelerator, else measured here (chained matmuls in one jitted call).")


def remat_recompute_fraction(policy: str) -> float:
    """Extra FLOPs that rematerialisation adds, as a fraction of the model FLOPs (which do
    not count them): "full" recomputes each layer's forward pass in the backward pass,
    about 2 of 6 FLOPs per parameter; the dots policies save matmul outputs and recompute
    only elementwise work, whose FLOPs are negligible."""
    return 1 / 3 if policy == "full" else 0.0


def local_device_kind() -> str:
    """What JAX calls this host's accelerator ("TPU v4", "NVIDIA H100 80GB HBM3", "cpu")."""
    return jax.local_devices()[0].device_kind


def peak_flops_per_device(dtype: str, device_kind: str | None = None) -> float:
    """The datasheet peak of this machine's accelerator (`parallel/chips.py`) when its
    device kind (default: JAX's first device's) is in the chip table, else a peak measured
    here with `measure_peak_flops`."""
    chip = chip_for_device_kind(device_kind or local_device_kind())
    if chip is not None:
        return peak_flops(chip, dtype)
    return measure_peak_flops(dtype)


def measure_peak_flops(dtype: str = "float32", size: int = 1024, matmuls: int = 32,
                       repeats: int = 3) -> float:
    """FLOP/s of one device on `matmuls` chained square matmuls in `dtype` (float32
    accumulation) inside one jitted call, the best of `repeats`: a peak measured on the
    spot, not a datasheet number. Chaining them in one call amortises dispatch, which
    would otherwise dominate a single matmul on a fast device and understate the peak."""
    a = jnp.full((size, size), 1.0 / size, dtype)

    @jax.jit
    def chain(x):
        def body(_, y):
            return jnp.matmul(y, a, preferred_element_type=jnp.float32).astype(dtype)
        return jax.lax.fori_loop(0, matmuls, body, x)

    chain(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        chain(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 * matmuls / best
