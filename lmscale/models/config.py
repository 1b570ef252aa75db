"""Model shapes: one dataclass for both families, and the named presets."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import jax.numpy as jnp

from lmscale.errors import ConfigError

FAMILIES = ("gpt", "bert")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
ATTENTION_IMPLS = ("auto", "xla", "cudnn", "splash")
# Megatron-LM pads the vocabulary to a multiple of 128 x the tensor-parallel size, so that
# every device's slice of the embedding table and of the logits is a multiple of 128 wide
# (nanoGPT's 50,304 is GPT-2's 50,257 padded to 128).
VOCAB_MULTIPLE = 128


@dataclass(frozen=True)
class ModelConfig:
    family: str  # "gpt" (decoder, causal LM) or "bert" (encoder, MLM + NSP)
    vocab_size: int
    max_len: int  # learned positions
    d_model: int
    num_layers: int
    num_heads: int
    d_ff: int
    type_vocab_size: int = 2  # BERT segment embeddings; unused by GPT
    dropout: float = 0.1  # embeddings and residual branches
    # On the attention probabilities (BERT's and GPT-2's 0.1); None = `dropout`. Training
    # with it > 0 computes attention explicitly instead of through fused kernels.
    attention_dropout: float | None = None
    layer_norm_eps: float = 1e-5
    compute_dtype: str = "float32"  # matmul inputs; accumulation is always float32
    remat_policy: str = "none"
    # False unrolls the layer loop: the same parameters and program without the loop
    # (compilers count a loop body once; `lmscale plan` unrolls to count every layer).
    scan_layers: bool = True
    # "auto": cuDNN flash attention on GPUs and the splash kernel on TPUs where they
    # apply, else XLA; see `layers.attention_implementation`. "xla", "cudnn" or "splash"
    # force one (a kernel only where it can compute the attention asked for).
    attention_impl: str = "auto"
    initializer_range: float = 0.02
    # Embedding rows (and logits) are padded to a multiple of this; the padded logits are
    # masked, so outputs equal the unpadded model's. See `for_tensor_parallel`.
    vocab_multiple: int = VOCAB_MULTIPLE
    # GPT's next-token loss takes the logits this many positions at a time, recomputing
    # each chunk's in the backward pass, so the [batch, length, vocab] float32 logits are
    # never whole in memory; 0 = all positions at once. Any size (the last chunk is padded).
    loss_chunk: int = 0

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ConfigError(f"model.family {self.family!r} must be one of {FAMILIES}")
        if self.d_model % self.num_heads:
            raise ConfigError(
                f"model.d_model ({self.d_model}) must be divisible by model.num_heads "
                f"({self.num_heads})"
            )
        if self.remat_policy not in REMAT_POLICIES:
            raise ConfigError(
                f"model.remat_policy {self.remat_policy!r} must be one of {REMAT_POLICIES}"
            )
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ConfigError(f"model.attention_impl {self.attention_impl!r} must be one of "
                              f"{ATTENTION_IMPLS}")
        try:
            jnp.dtype(self.compute_dtype)
        except TypeError as err:
            raise ConfigError(f"model.compute_dtype {self.compute_dtype!r}: {err}") from err
        if self.vocab_multiple < 1:
            raise ConfigError(f"model.vocab_multiple must be >= 1, got {self.vocab_multiple}")
        if self.loss_chunk < 0:
            raise ConfigError(f"model.loss_chunk must be >= 0 (0 = no chunking), got "
                              f"{self.loss_chunk}")
        if self.loss_chunk and self.family != "gpt":
            raise ConfigError("model.loss_chunk applies to GPT's next-token loss; BERT "
                              "computes vocabulary logits only at the masked positions, "
                              "so leave it 0")

    @property
    def attention_dropout_rate(self) -> float:
        return self.dropout if self.attention_dropout is None else self.attention_dropout

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def dtype(self) -> jnp.dtype:
        return jnp.dtype(self.compute_dtype)

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding table and width of the logits: `vocab_size` rounded up to
        a multiple of `vocab_multiple`. Rows past `vocab_size` are never looked up and their
        logits are masked."""
        return -(-self.vocab_size // self.vocab_multiple) * self.vocab_multiple

    def for_tensor_parallel(self, tensor: int) -> ModelConfig:
        """This shape with the vocabulary padded for `tensor` tensor-parallel devices
        (Megatron's rule: a multiple of 128 x tensor), which split the vocabulary axis."""
        _check_tensor_size(tensor)
        return dataclasses.replace(self, vocab_multiple=VOCAB_MULTIPLE * tensor)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names - {"preset"})
        if unknown:
            raise ConfigError(f"unknown model fields {unknown}; valid: {sorted(names)}")
        return cls(**{k: v for k, v in values.items() if k in names})


def tensor_parallel_sizes(cfg: ModelConfig) -> list[int]:
    """Tensor-parallel sizes `cfg` allows: the common divisors of its head count and MLP
    width, which are split over the `tensor` mesh axis (the vocabulary is padded instead)."""
    common = math.gcd(cfg.num_heads, cfg.d_ff)
    return [n for n in range(1, common + 1) if common % n == 0]


def _check_tensor_size(tensor: int) -> None:
    if tensor < 1:
        raise ConfigError(f"a tensor-parallel size must be a positive device count, got "
                          f"{tensor} (resolve mesh.tensor=-1 against the devices first)")


def check_tensor_parallel(cfg: ModelConfig, tensor: int) -> None:
    """Refuse a `mesh.tensor` size that does not divide the heads and the MLP width."""
    _check_tensor_size(tensor)
    if cfg.num_heads % tensor or cfg.d_ff % tensor:
        sizes = ", ".join(map(str, tensor_parallel_sizes(cfg)))
        raise ConfigError(
            f"mesh.tensor={tensor} must divide model.num_heads ({cfg.num_heads}) and "
            f"model.d_ff ({cfg.d_ff}), which are split over it; sizes that do: {sizes}")


def _gpt2(d_model: int, num_layers: int, num_heads: int, **kw) -> dict:
    shape = dict(family="gpt", vocab_size=50257, max_len=1024, d_model=d_model,
                 num_layers=num_layers, num_heads=num_heads, d_ff=4 * d_model)
    return shape | kw


def _bert(d_model: int, num_layers: int, num_heads: int, **kw) -> dict:
    shape = dict(family="bert", vocab_size=30522, max_len=512, d_model=d_model,
                 num_layers=num_layers, num_heads=num_heads, d_ff=4 * d_model,
                 layer_norm_eps=1e-12)
    return shape | kw


# Published shapes: GPT-2 paper table 2 / openai/gpt-2 hparams; BERT paper section 3.
PRESETS: dict[str, dict] = {
    "gpt2-tiny": _gpt2(128, 4, 4, vocab_size=4096, max_len=256),
    "gpt2": _gpt2(768, 12, 12),
    "gpt2-medium": _gpt2(1024, 24, 16),
    "gpt2-large": _gpt2(1280, 36, 20),
    "gpt2-xl": _gpt2(1600, 48, 25),
    "bert-tiny": _bert(128, 2, 2, vocab_size=4096, max_len=256),
    "bert-base": _bert(768, 12, 12),
    "bert-large": _bert(1024, 24, 16),
}


def preset(name: str, **overrides) -> dict:
    """Every model field as a plain dict (for configs): the preset, then `overrides`."""
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    fields = dataclasses.asdict(ModelConfig.from_dict(PRESETS[name] | overrides))
    return {"preset": name} | fields
