"""Exact parameter counts and training FLOPs for transformer shapes.

Counts are exact for the published implementations (GPT-2, BERT, T5), not the
12·L·d² approximation: every weight, bias and normalisation scale is counted.
"Embedding" parameters follow Kaplan et al. 2020 (Table 1): the vocabulary and
position tables, whose size does not set the compute per token. The scaling-law N is
the non-embedding count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lmscale.errors import InputError

NormKind = Literal["layernorm", "rmsnorm"]


@dataclass(frozen=True)
class TransformerShape:
    """One stack of identical blocks: a GPT-style decoder or a BERT-style encoder.

    `d_ff` defaults to 4·d_model and `head_dim` to d_model/heads (GPT-2, BERT, GPT-3);
    set them for models that differ. `final_norm` is the pre-LN stack's closing norm
    (GPT-2 `ln_f`); post-LN models (GPT, BERT) have none but BERT normalises the
    embeddings instead (`embedding_norm`).
    """

    vocab_size: int
    context: int
    d_model: int
    layers: int
    heads: int
    d_ff: int | None = None
    head_dim: int | None = None
    type_vocab: int = 0
    learned_positions: bool = True
    tied_head: bool = True
    head_bias: bool = False
    biases: bool = True
    norm: NormKind = "layernorm"
    final_norm: bool = True
    embedding_norm: bool = False
    pooler: bool = False
    mlm_head: bool = False
    nsp_head: bool = False
    # Transformer-XL relative attention (Dai et al. 2019, eq. 4) projects the
    # sinusoidal position encodings with one extra d_model × d_attn matrix per layer.
    relative_position_projection: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context", "d_model", "layers", "heads"):
            if getattr(self, name) <= 0:
                raise InputError(
                    f"TransformerShape.{name} must be positive, got {getattr(self, name)}"
                )
        if self.head_dim is None and self.d_model % self.heads:
            raise InputError(
                f"d_model={self.d_model} is not divisible by heads={self.heads}; "
                "set head_dim explicitly"
            )

    @property
    def ffn_dim(self) -> int:
        return self.d_ff if self.d_ff is not None else 4 * self.d_model

    @property
    def attention_dim(self) -> int:
        """heads × head_dim: the width of the query/key/value projections."""
        return self.heads * (
            self.head_dim if self.head_dim is not None else self.d_model // self.heads
        )


@dataclass(frozen=True)
class EncoderDecoderShape:
    """A T5-style encoder-decoder (Raffel et al. 2020, section 2.1, v1.0 checkpoints).

    No biases anywhere; norms are RMS scale only; one relative-position bias table
    (buckets × heads) in the first self-attention of each stack, shared by its layers;
    one token embedding shared by encoder, decoder and (when tied) the output layer.
    """

    vocab_size: int
    d_model: int
    heads: int
    head_dim: int
    d_ff: int
    encoder_layers: int
    decoder_layers: int
    relative_buckets: int = 32
    tied_head: bool = True


@dataclass(frozen=True)
class ParamCount:
    total: int
    embedding: int

    @property
    def non_embedding(self) -> int:
        return self.total - self.embedding


def _norm_params(d: int, norm: NormKind) -> int:
    # LayerNorm has a gain and a bias (gamma, beta); RMSNorm only a gain.
    return 2 * d if norm == "layernorm" else d


def _linear(d_in: int, d_out: int, bias: bool) -> int:
    return d_in * d_out + (d_out if bias else 0)


def _attention(d: int, d_attn: int, bias: bool) -> int:
    # query, key and value projections, then the output projection back to d_model.
    return 3 * _linear(d, d_attn, bias) + _linear(d_attn, d, bias)


def param_count(shape: TransformerShape) -> ParamCount:
    """Exact parameter count of an encoder or decoder stack with its heads."""
    d, v, bias = shape.d_model, shape.vocab_size, shape.biases
    embedding = v * d + shape.type_vocab * d
    if shape.learned_positions:
        embedding += shape.context * d

    block = (
        _attention(d, shape.attention_dim, bias)
        + _linear(d, shape.ffn_dim, bias)
        + _linear(shape.ffn_dim, d, bias)
        + 2 * _norm_params(d, shape.norm)
    )
    if shape.relative_position_projection:
        block += d * shape.attention_dim
    body = shape.layers * block
    if shape.final_norm:
        body += _norm_params(d, shape.norm)
    if shape.embedding_norm:
        body += _norm_params(d, shape.norm)

    if not shape.tied_head:
        # An untied output matrix is the "de-embedding" Kaplan's Table 1 also leaves out
        # of N: it scales with the vocabulary, not with depth.
        embedding += v * d
    if shape.head_bias:
        body += v
    if shape.pooler:
        body += _linear(d, d, bias=True)  # BERT pooler: dense + tanh on [CLS]
    if shape.mlm_head:
        # BERT MLM transform (dense + GELU + LayerNorm), decoder tied to the word
        # embeddings, plus its own output bias over the vocabulary.
        body += _linear(d, d, bias=True) + _norm_params(d, shape.norm) + v
    if shape.nsp_head:
        body += _linear(d, 2, bias=True)
    return ParamCount(total=embedding + body, embedding=embedding)


def encoder_decoder_param_count(shape: EncoderDecoderShape) -> ParamCount:
    """Exact parameter count of a T5-style encoder-decoder."""
    d, d_attn = shape.d_model, shape.heads * shape.head_dim
    attention = _attention(d, d_attn, bias=False)
    ffn = _linear(d, shape.d_ff, False) + _linear(shape.d_ff, d, False)
    encoder_block = attention + ffn + 2 * d
    decoder_block = 2 * attention + ffn + 3 * d  # self-attention, cross-attention, FFN
    relative_bias = 2 * shape.relative_buckets * shape.heads  # one table per stack
    embedding = shape.vocab_size * d * (1 if shape.tied_head else 2)
    body = (
        shape.encoder_layers * encoder_block
        + shape.decoder_layers * decoder_block
        + 2 * d  # final RMS norm of each stack
    )
    # The relative-position tables are the positional embedding of T5.
    embedding += relative_bias
    return ParamCount(total=embedding + body, embedding=embedding)


def kaplan_flops_per_token(shape: TransformerShape) -> int:
    """Training FLOPs per token, C ≈ 6N with N non-embedding (Kaplan et al. 2020, 2.1).

    2N for the forward matmuls, twice that for the backward pass; attention over the
    context and the vocabulary projection are left out, as in the paper.
    """
    return 6 * param_count(shape).non_embedding


def palm_flops_per_token(shape: TransformerShape) -> int:
    """Training FLOPs per token, 6N + 12·L·T·d_attn (Chowdhery et al. 2022, appendix B).

    N counts every weight used in a matmul: the non-embedding parameters plus the
    output projection over the vocabulary (tied or not); token and position lookups
    cost no FLOPs. The second term is the attention scores and weighted values
    (2·T·d_attn forward per layer, ×3 for forward + backward).
    """
    count = param_count(shape)
    matmul_params = count.non_embedding + shape.vocab_size * shape.d_model
    return 6 * matmul_params + 12 * shape.layers * shape.context * shape.attention_dim


def model_flops_utilization(
    flops_per_token: float, tokens_per_second: float, peak_flops_per_second: float
) -> float:
    """MFU: the model FLOP/s achieved over the hardware's peak (PaLM appendix B).

    The peak is passed in, never assumed: it depends on the chip and the dtype.
    """
    if peak_flops_per_second <= 0:
        raise InputError(f"peak FLOP/s must be positive, got {peak_flops_per_second}")
    return flops_per_token * tokens_per_second / peak_flops_per_second
