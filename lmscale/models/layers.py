"""Transformer building blocks shared by BERT and GPT-2.

Parameters carry logical axis names (`embed`, `mlp`, `heads`, `kv`, `vocab`, `positions`);
activations are constrained with `batch`, `length` and `act_*` names. `lmscale.parallel`
maps both onto the device mesh, so nothing here knows how many devices there are.
Parameters are float32; matmuls take the compute dtype and accumulate in float32, in the
backward pass too (`lmscale.models.matmul`).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from lmscale.models.attention import scaled_scores, softmax_attention
from lmscale.models.config import ModelConfig
from lmscale.models.matmul import matmul
from lmscale.models.splash import splash_attention, splash_supports

Axes = tuple[str | None, ...]
# `Projection` outputs carry this name for `jax.checkpoint` (see `remat_policy`).
PROJECTION_NAME = "projection"


def normal_init(std: float, axes: Axes):
    return nn.with_logical_partitioning(nn.initializers.normal(std), axes)


def constrain(x: jax.Array, axes: Axes) -> jax.Array:
    return nn.with_logical_constraint(x, axes)


class Projection(nn.Module):
    """y = x·W + b, contracting the last `contract` axes of x with the first of W.

    The output has `out_dtype` (default: the compute dtype); output heads whose logits go
    straight into a loss set it to float32, so that bf16 recipes do not round them.

    The output is named `PROJECTION_NAME` for the dot remat policies, which save it in
    that dtype (under bf16 compute, half the bytes of the float32 matmul result) and with
    its feature axes flattened: saved as [..., heads, head_dim], the layers' stacked q, k
    and v took the splash kernel's layout, whose 128-lane tiles pad GPT-2's head_dim of 64
    to twice its bytes (1.69 GiB per device for gpt2_small on a v5e-4).
    """

    features: Sequence[int]
    kernel_axes: Axes
    dtype: jnp.dtype
    contract: int = 1
    init_std: float = 0.02
    out_dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_shape = x.shape[-self.contract:]
        kernel = self.param(
            "kernel", normal_init(self.init_std, self.kernel_axes),
            (*in_shape, *self.features), jnp.float32,
        )
        bias_init = nn.with_logical_partitioning(nn.initializers.zeros,
                                                 self.kernel_axes[self.contract:])
        bias = self.param("bias", bias_init, tuple(self.features), jnp.float32)
        x_axes = tuple(range(x.ndim - self.contract, x.ndim))
        y = matmul(x, kernel, (x_axes, tuple(range(self.contract))), self.dtype)
        y = (y + bias).astype(self.dtype if self.out_dtype is None else self.out_dtype)
        flat = y.reshape(*y.shape[:y.ndim - len(self.features)], -1)
        return checkpoint_name(flat, PROJECTION_NAME).reshape(y.shape)


class LayerNorm(nn.Module):
    """LayerNorm computed in float32 whatever the compute dtype, for stability."""

    epsilon: float
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.LayerNorm(
            epsilon=self.epsilon, dtype=jnp.float32, param_dtype=jnp.float32,
            scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
            name="norm",
        )(x.astype(jnp.float32))
        return y.astype(self.dtype)


class Embed(nn.Module):
    """A lookup table that can also act as the tied output layer (`attend`)."""

    num_embeddings: int
    features: int
    axes: Axes
    dtype: jnp.dtype
    init_std: float = 0.02

    def setup(self):
        self.embedding = self.param(
            "embedding", normal_init(self.init_std, self.axes),
            (self.num_embeddings, self.features), jnp.float32,
        )

    def __call__(self, ids: jax.Array) -> jax.Array:
        return jnp.take(self.embedding, ids, axis=0).astype(self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        """Logits against every row of the table, in float32: [..., d] -> [..., num_embeddings]."""
        return matmul(x, self.embedding, ((x.ndim - 1,), (1,)), self.dtype)


CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)


def attention_implementation(cfg: ModelConfig, dtype, mask: jax.Array | None,
                             decode: bool, backend: str | None = None,
                             length: int | None = None) -> str:
    """Which attention a layer computes: "cudnn" (`jax.nn.dot_product_attention`'s fused
    flash attention), "splash" (the TPU Pallas kernel, `lmscale.models.splash`) or "xla"
    (`lmscale.models.attention`).

    Both kernels take self-attention with no mask or BERT's [batch, 1, 1, length]
    right-padding mask (cuDNN as key lengths, splash as key segment ids), not decoding
    (the KV cache's per-query mask of left-padded prompts fits neither); GPT masks (left
    padding, packed segments) stay on XLA. cuDNN also needs bf16/fp16 inputs; splash
    bf16/f32 and a `length` (tokens per sequence) that is a multiple of 128.

    `attention_impl="auto"` takes cuDNN on a GPU and splash on a TPU wherever they apply.
    The backend is that of the devices the program is traced for (the mesh in context,
    so that `lmscale plan` compiles for a TPU topology what a TPU would run), else JAX's
    default; `backend` overrides it. "cudnn" or "splash" force a kernel where it applies
    (and fail loudly on a machine without it; splash on a CPU runs interpreted, for
    tests). Dropout on the attention probabilities is handled before this, explicitly.
    """
    backend = backend or traced_backend()
    impl = cfg.attention_impl
    key_mask_only = mask is None or (cfg.family == "bert" and mask.shape[1:3] == (1, 1))
    if impl == "xla" or decode or not key_mask_only:
        return "xla"
    cudnn = jnp.dtype(dtype) in CUDNN_DTYPES
    splash = splash_supports(dtype, length)
    if (impl == "cudnn" or (impl == "auto" and backend in ("gpu", "cuda"))) and cudnn:
        return "cudnn"
    if (impl == "splash" or (impl == "auto" and backend == "tpu")) and splash:
        return "splash"
    return "xla"


def traced_backend() -> str:
    """The platform of the mesh in context ("tpu" while compiling for a TPU topology on a
    CPU), else JAX's default backend."""
    mesh = jax.sharding.get_abstract_mesh()
    return jax.default_backend() if mesh.empty else mesh.abstract_device.platform


class SelfAttention(nn.Module):
    """Multi-head self-attention through cuDNN's flash attention (`jax.nn.dot_product_
    attention`), the TPU splash kernel or plain XLA (`lmscale.models.attention`), as
    `attention_implementation` chooses: splash covers GPT's
    causal attention with no mask and BERT's padding mask, in bf16 or f32, over lengths
    that are multiples of 128; everything else (GPT's padding or packing masks, decoding)
    goes to XLA.

    When training with attention-probability dropout (`attention_dropout_rate` > 0 and not
    `deterministic`), the same softmax attention is computed explicitly, since the fused
    kernels have no dropout.

    With `decode=True` (causal only) keys and values go to a `cache` collection: the
    first call with an uninitialised cache only creates it (its length is that input's
    length); later calls append their tokens at the cache index and attend to every
    filled slot, so a prefill pass and then one token per step see exactly what a full
    forward pass would.
    """

    config: ModelConfig
    causal: bool
    decode: bool = False
    deterministic: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        """`mask` [batch, 1, 1, length] marks the keys that are real tokens (or None)."""
        cfg = self.config
        heads = (cfg.num_heads, cfg.head_dim)

        def project(name: str) -> jax.Array:
            y = Projection(heads, ("embed", "heads", "kv"), cfg.dtype,
                           init_std=cfg.initializer_range, name=name)(x)
            return constrain(y, ("batch", "length", "act_heads", "kv"))  # [b, t, h, d]

        q, k, v = project("query"), project("key"), project("value")
        cache_ready = self.decode and self.has_variable("cache", "cached_key")
        if self.decode:
            k, v, mask = self._extend_cache(k, v, mask)
        causal = self.causal and not cache_ready
        impl = attention_implementation(cfg, q.dtype, mask, self.decode, length=q.shape[1])
        if cfg.attention_dropout_rate > 0 and not self.deterministic:
            y = self._attention_with_dropout(q, k, v, mask, causal)
        elif impl == "cudnn":
            # cuDNN takes padding as key lengths: BERT masks are right padding.
            lengths = None if mask is None else jnp.sum(
                mask.reshape(mask.shape[0], -1), axis=-1, dtype=jnp.int32)
            y = jax.nn.dot_product_attention(q, k, v, is_causal=causal,
                                             key_value_seq_lengths=lengths,
                                             implementation="cudnn")
        elif impl == "splash":
            key_mask = None if mask is None else mask.reshape(mask.shape[0], -1)
            y = splash_attention(q, k, v, causal=causal, key_mask=key_mask,
                                 interpret=traced_backend() == "cpu")
        else:
            y = softmax_attention(q, k, v, mask, causal)
        y = constrain(y, ("batch", "length", "act_heads", "kv"))
        return Projection((cfg.d_model,), ("heads", "kv", "embed"), cfg.dtype, contract=2,
                          init_std=self.out_init_std, name="out")(y)

    def _attention_with_dropout(self, q, k, v, mask: jax.Array | None,
                                causal: bool) -> jax.Array:
        """softmax(q·kᵀ/√d) with dropout on the probabilities, then ·v ([b, t, h, d])."""
        probs = jax.nn.softmax(scaled_scores(q, k, mask, causal), axis=-1).astype(v.dtype)
        probs = nn.Dropout(self.config.attention_dropout_rate, deterministic=False)(probs)
        return jnp.einsum("bhqk,bkhd->bqhd", probs, v, preferred_element_type=jnp.float32
                          ).astype(v.dtype)

    def _extend_cache(self, k: jax.Array, v: jax.Array, mask: jax.Array | None):
        """Append k, v [b, t, h, d] at the cache index; return the whole cache and the
        mask [b, 1, t, cache_len] of what each new query may see (causal, real tokens)."""
        ready = self.has_variable("cache", "cached_key")
        key = self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
        value = self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
        # Which slots hold real tokens: left padding of shorter prompts stays invisible.
        real = self.variable("cache", "cached_real", jnp.zeros, k.shape[:2], jnp.bool_)
        index = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
        if not ready:  # initialisation only sizes the cache
            return k, v, mask
        batch, new = k.shape[:2]
        new_real = (jnp.ones((batch, new), jnp.bool_) if mask is None
                    else mask.reshape(batch, new).astype(jnp.bool_))
        start = index.value
        key.value = jax.lax.dynamic_update_slice(key.value, k.astype(key.value.dtype),
                                                 (0, start, 0, 0))
        value.value = jax.lax.dynamic_update_slice(value.value, v.astype(value.value.dtype),
                                                   (0, start, 0, 0))
        real.value = jax.lax.dynamic_update_slice(real.value, new_real, (0, start))
        index.value = start + new
        slots = jnp.arange(key.value.shape[1])
        causal = slots[None, :] <= start + jnp.arange(new)[:, None]  # [t, cache_len]
        visible = causal[None, None] & real.value[:, None, None, :]
        return key.value, value.value, visible

    @property
    def out_init_std(self) -> float:
        # GPT-2 section 2.3: scale residual-path weights by 1/sqrt(N) at initialisation,
        # N = number of residual layers (two per block).
        cfg = self.config
        if cfg.family == "gpt":
            return cfg.initializer_range / (2 * cfg.num_layers) ** 0.5
        return cfg.initializer_range


class MLP(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        h = Projection((cfg.d_ff,), ("embed", "mlp"), cfg.dtype,
                       init_std=cfg.initializer_range, name="up")(x)
        h = constrain(h, ("batch", "length", "act_mlp"))
        # GPT-2 uses the tanh approximation of GELU; BERT the exact erf form.
        h = nn.gelu(h, approximate=cfg.family == "gpt")
        out_std = cfg.initializer_range
        if cfg.family == "gpt":
            out_std /= (2 * cfg.num_layers) ** 0.5
        return Projection((cfg.d_model,), ("mlp", "embed"), cfg.dtype, init_std=out_std,
                          name="down")(h)


def remat_policy(name: str):
    if name == "full":
        return None  # save nothing, recompute the whole block
    dots = {"dots": jax.checkpoint_policies.checkpoint_dots,
            "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}[name]
    # The projections' dots sit inside `matmul`'s custom_vjp, out of the dot policies'
    # sight: their outputs are saved by name (all of them are dots without batch axes),
    # after the bias and the cast to the compute dtype.
    return jax.checkpoint_policies.save_from_both_policies(
        dots, jax.checkpoint_policies.save_only_these_names(PROJECTION_NAME))


def stack_layers(block_cls: type[nn.Module], config: ModelConfig, name: str, **block_kwargs):
    """`config.num_layers` copies of a block, scanned (compile time independent of depth).

    The block is called as `block(x, mask) -> (x, None)`; its parameters (and decoding
    cache, if any) get a leading `layers` axis.
    """
    if config.remat_policy != "none":
        block_cls = nn.remat(block_cls, policy=remat_policy(config.remat_policy),
                             prevent_cse=False)
    scanned = nn.scan(
        block_cls,
        variable_axes={"params": 0, "cache": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=(nn.broadcast,),
        length=config.num_layers,
        unroll=True if not config.scan_layers else 1,
        metadata_params={nn.PARTITION_NAME: "layers"},
    )
    return scanned(config=config, name=name, **block_kwargs)
