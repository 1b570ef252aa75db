"""Parameter counts of the transformer LMs in the history of scale, from their shapes.

Each entry holds the published shape, the size its authors announced and the unit they
rounded to; `lmscale scaling table` prints our exact count beside the announced one and
explains every figure that does not reconcile with its own shape.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmscale.flops import (
    EncoderDecoderShape,
    ParamCount,
    TransformerShape,
    encoder_decoder_param_count,
    param_count,
)

_GPT2_VOCAB = 50_257


@dataclass(frozen=True)
class HistoricalModel:
    name: str
    year: int
    announced: float  # parameters, as the paper or announcement states them
    rounding: float  # the unit the announced figure is rounded to
    shape: TransformerShape | EncoderDecoderShape
    tokens: float | None  # training tokens D where published (for the N–D plot)
    source: str
    note: str = ""

    @property
    def count(self) -> ParamCount:
        if isinstance(self.shape, EncoderDecoderShape):
            return encoder_decoder_param_count(self.shape)
        return param_count(self.shape)

    @property
    def reconciles(self) -> bool:
        """True when our exact count rounds to the announced figure."""
        return abs(self.count.total - self.announced) <= self.rounding / 2


def _bert_like(
    vocab: int, positions: int, type_vocab: int, d: int, layers: int, heads: int
) -> TransformerShape:
    # Post-LN encoder: LayerNorm on the embeddings, none after the last block; pooler kept
    # because the released checkpoints (and their announced sizes) include it.
    return TransformerShape(
        vocab_size=vocab,
        context=positions,
        d_model=d,
        layers=layers,
        heads=heads,
        type_vocab=type_vocab,
        final_norm=False,
        embedding_norm=True,
        pooler=True,
    )


def _gpt_like(vocab: int, context: int, d: int, layers: int, heads: int) -> TransformerShape:
    # Pre-LN decoder (GPT-2 section 2.3 onwards): a final LayerNorm, tied output layer.
    return TransformerShape(
        vocab_size=vocab, context=context, d_model=d, layers=layers, heads=heads
    )


def _deepmind(d: int, layers: int, heads: int) -> TransformerShape:
    # Rae et al. 2021 section 3: RMSNorm, Transformer-XL relative positions, 32k
    # SentencePiece vocabulary, d_ff = 4·d_model, key/value size 128. No biases (their
    # Haiku/JAX code base), tied embeddings assumed: the paper does not say, and an
    # untied output layer would add only 32,000·d_model.
    return TransformerShape(
        vocab_size=32_000,
        context=2_048,
        d_model=d,
        layers=layers,
        heads=heads,
        head_dim=128,
        learned_positions=False,
        biases=False,
        norm="rmsnorm",
        relative_position_projection=True,
    )


HISTORY: tuple[HistoricalModel, ...] = (
    HistoricalModel(
        name="GPT",
        year=2018,
        announced=117e6,
        rounding=1e6,
        shape=TransformerShape(
            vocab_size=40_478, context=512, d_model=768, layers=12, heads=12, final_norm=False
        ),
        tokens=None,
        source="Radford et al. 2018 section 4.1; size from Radford et al. 2019 Table 2; "
        "vocab 40,478 as released (openai-gpt)",
        note="116,534,784 rounds to 117M: the post-LN decoder has no final LayerNorm.",
    ),
    HistoricalModel(
        name="BERT-Large",
        year=2018,
        announced=340e6,
        rounding=10e6,
        shape=_bert_like(30_522, 512, 2, 1024, 24, 16),
        tokens=128e9,  # 1M steps × 256 sequences × 512 tokens (Devlin et al. A.2)
        source="Devlin et al. 2019 section 3 (L=24, H=1024, A=16); vocab 30,522 as released",
        note="Reconciles only at the paper's 10M rounding, at its edge: the shape gives "
        "335.1M with the pooler (336.2M with the MLM and NSP heads), never 340M.",
    ),
    HistoricalModel(
        name="RoBERTa-large",
        year=2019,
        announced=355e6,
        rounding=1e6,
        shape=_bert_like(50_265, 514, 1, 1024, 24, 16),
        tokens=2.1e12,  # 500K steps × 8K sequences × 512 tokens (Liu et al. Table 3)
        source="Liu et al. 2019 (BERT-Large shape, GPT-2 byte BPE of 50K); 514 positions "
        "and 1 segment type as released (fairseq, roberta-large)",
    ),
    HistoricalModel(
        name="XLM-R Large",
        year=2019,
        announced=550e6,
        rounding=10e6,
        shape=_bert_like(250_002, 514, 1, 1024, 24, 16),
        tokens=6.3e12,  # 1.5M updates × 8,192 sequences × 512 tokens (Conneau et al. 4)
        source="Conneau et al. 2020 Table 7 (L=24, H=1024, A=16, V=250K); 250,002 tokens "
        "and 514 positions as released (xlm-roberta-large)",
        note="Does not reconcile: the shape gives 559.9M (the released checkpoint holds the "
        "same); 550M is rounded down, with 256M of it the 250K×1024 embedding alone.",
    ),
    HistoricalModel(
        name="GPT-2 1.5B",
        year=2019,
        announced=1542e6,
        rounding=1e6,
        shape=_gpt_like(_GPT2_VOCAB, 1024, 1600, 48, 25),
        tokens=None,
        source="Radford et al. 2019 Table 2 (L=48, d=1600); vocab 50,257, context 1,024",
        note="Does not reconcile: the released model has 1,557,611,200. All four GPT-2 "
        "sizes in Table 2 (117M, 345M, 762M, 1542M) are what the same shapes give "
        "with GPT's 40,478-token vocabulary (1,541,964,800 here), i.e. the table "
        "appears to predate the 50,257-token BPE.",
    ),
    HistoricalModel(
        name="Megatron-LM 8.3B",
        year=2019,
        announced=8.3e9,
        rounding=0.1e9,
        shape=_gpt_like(51_200, 1024, 3072, 72, 32),
        tokens=157e9,  # 300K iterations × 512 sequences × 1,024 tokens
        source="Shoeybi et al. 2019 Table 2 (L=72, d=3072, 32 heads); GPT-2 BPE padded "
        "to 51,200 so the vocabulary splits evenly across 8-way model parallelism",
    ),
    HistoricalModel(
        name="T5-11B",
        year=2019,
        announced=11e9,
        rounding=1e9,
        shape=EncoderDecoderShape(
            vocab_size=32_128,
            d_model=1024,
            heads=128,
            head_dim=128,
            d_ff=65_536,
            encoder_layers=24,
            decoder_layers=24,
        ),
        tokens=1e12,  # 1M steps × 2^11 sequences × 512 tokens ≈ 1T (Raffel et al. 3.7)
        source="Raffel et al. 2020 section 3.7 (d_model=1024, d_ff=65,536, d_kv=128, "
        "128 heads, 24+24 layers); 32,128 vocab rows as released",
        note="11B rounds 11.31B. d_ff=65,536 and 128×128 attention make almost all the "
        "weights, so 12·L·d_model² (0.6B) would be far off. The paper's vocabulary is "
        "32,000; the checkpoints pad it to 32,128 (+0.13M).",
    ),
    HistoricalModel(
        name="Turing-NLG",
        year=2020,
        announced=17e9,
        rounding=1e9,
        shape=_gpt_like(_GPT2_VOCAB, 1024, 4256, 78, 28),
        tokens=None,
        source="Microsoft Research blog, Feb 2020 (78 layers, hidden 4256, 28 heads); "
        "GPT-2 vocabulary and 1,024 context assumed (Megatron-LM lineage)",
    ),
    HistoricalModel(
        name="GPT-3",
        year=2020,
        announced=175e9,
        rounding=1e9,
        shape=_gpt_like(_GPT2_VOCAB, 2048, 12_288, 96, 96),
        tokens=300e9,
        source="Brown et al. 2020 Table 2.1 (L=96, d=12,288, 96 heads of 128, n_ctx 2,048)",
        note="174.6B rounds to the 175.0B of Table 2.1; the alternating sparse attention "
        "layers add no parameters.",
    ),
    HistoricalModel(
        name="Gopher",
        year=2021,
        announced=280e9,
        rounding=1e9,
        shape=_deepmind(16_384, 80, 128),
        tokens=300e9,
        source="Rae et al. 2021 Table 1 (L=80, d=16,384, 128 heads, key/value size 128)",
        note="12·L·d² gives only 257.7B; the 280B needs the Transformer-XL relative "
        "position projection, one more d×d matrix per layer (13·L·d² = 279.2B).",
    ),
    HistoricalModel(
        name="Megatron-Turing NLG",
        year=2022,
        announced=530e9,
        rounding=1e9,
        shape=_gpt_like(_GPT2_VOCAB, 2048, 20_480, 105, 128),
        tokens=270e9,
        source="Smith et al. 2022 section 3 (105 layers, hidden 20,480, 128 heads, "
        "sequence 2,048, GPT-2 BPE)",
    ),
    HistoricalModel(
        name="Chinchilla",
        year=2022,
        announced=70e9,
        rounding=1e9,
        shape=_deepmind(8_192, 80, 64),
        tokens=1.4e12,
        source="Hoffmann et al. 2022 Table 4 (L=80, d=8,192, 64 heads, key/value size 128)",
        note="The compute-optimal reference point for the frontier plot.",
    ),
)


def _human(n: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.4g}{unit}"
    return f"{n:g}"


def _shape_cells(shape: TransformerShape | EncoderDecoderShape) -> list[str]:
    if isinstance(shape, EncoderDecoderShape):
        layers = f"{shape.encoder_layers}+{shape.decoder_layers}"
        return [
            layers,
            str(shape.d_model),
            str(shape.heads),
            str(shape.d_ff),
            str(shape.vocab_size),
            "rel",
        ]
    ctx = str(shape.context) if shape.learned_positions else f"{shape.context}r"
    return [
        str(shape.layers),
        str(shape.d_model),
        str(shape.heads),
        str(shape.ffn_dim),
        str(shape.vocab_size),
        ctx,
    ]


def history_table(models: tuple[HistoricalModel, ...] = HISTORY) -> str:
    """The text `lmscale scaling table` prints: shapes, counts, announced sizes, notes."""
    header = [
        "model",
        "year",
        "L",
        "d",
        "heads",
        "d_ff",
        "vocab",
        "ctx",
        "counted",
        "announced",
        "ok",
    ]
    rows = []
    for m in models:
        rows.append(
            [
                m.name,
                str(m.year),
                *_shape_cells(m.shape),
                f"{m.count.total:,}",
                _human(m.announced),
                "yes" if m.reconciles else "NO",
            ]
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.rjust(w) if i > 0 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(
        "ctx: learned positions; 'r' = relative positions (no table); T5 'rel' = bucketed bias."
    )
    lines.append("")
    for i, m in enumerate(models, 1):
        lines.append(f"[{i}] {m.name}: {m.source}.")
        if m.note:
            lines.append(f"    {m.note}")
    return "\n".join(lines)
