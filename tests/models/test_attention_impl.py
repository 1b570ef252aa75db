"""Which attention kernel a layer takes: cuDNN flash attention on GPUs and the splash
kernel on TPUs where they compute exactly the same attention, XLA's everywhere else
(`layers.attention_implementation`); and splash's numbers against XLA's, run in Pallas's
interpreter on this CPU (`lmscale.models.splash`)."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmscale.errors import ConfigError
from lmscale.models import BertModel, GPT, ModelConfig, preset
from lmscale.models.layers import attention_implementation, traced_backend
from lmscale.models.splash import splash_attention
from lmscale.parallel.mesh import make_mesh, mesh_context

BF16 = jnp.bfloat16
BERT_MASK = jnp.ones((2, 1, 1, 16), bool)  # [batch, 1, 1, keys]: right padding
GPT_QUERY_MASK = jnp.ones((2, 1, 16, 16), bool)  # per-query: packed segments, decoding


def config(name: str, impl: str = "auto") -> ModelConfig:
    return ModelConfig.from_dict(preset(name, attention_impl=impl))


@pytest.mark.parametrize("family, dtype, mask, decode, backend, length, expected", [
    ("gpt2-tiny", BF16, None, False, "gpu", 16, "cudnn"),  # GPT pretraining on a GPU
    ("bert-tiny", BF16, BERT_MASK, False, "gpu", 16, "cudnn"),  # padding as key lengths
    ("gpt2-tiny", BF16, None, False, "cpu", 256, "xla"),
    ("gpt2-tiny", jnp.float32, None, False, "gpu", 16, "xla"),  # cuDNN has no float32
    ("gpt2-tiny", BF16, BERT_MASK, False, "gpu", 16, "xla"),  # GPT masks are left padding
    ("gpt2-tiny", BF16, GPT_QUERY_MASK, False, "gpu", 16, "xla"),
    ("gpt2-tiny", BF16, None, True, "gpu", 16, "xla"),  # the KV cache's per-query mask
    ("gpt2-tiny", BF16, None, False, "tpu", 256, "splash"),  # GPT pretraining on a TPU
    ("gpt2-tiny", jnp.float32, None, False, "tpu", 1024, "splash"),
    ("bert-tiny", BF16, BERT_MASK, False, "tpu", 512, "splash"),  # padding as segment ids
    ("gpt2-tiny", BF16, None, False, "tpu", 16, "xla"),  # not a multiple of 128-token blocks
    ("gpt2-tiny", BF16, None, False, "tpu", None, "xla"),  # length unknown
    ("gpt2-tiny", jnp.float16, None, False, "tpu", 256, "xla"),  # splash: bf16 or f32
    ("gpt2-tiny", BF16, BERT_MASK, False, "tpu", 256, "xla"),
    ("gpt2-tiny", BF16, GPT_QUERY_MASK, False, "tpu", 256, "xla"),
    ("gpt2-tiny", BF16, None, True, "tpu", 256, "xla"),
    ("gpt2-tiny", BF16, None, False, "gpu", 256, "cudnn"),  # splash is for TPUs only
])
def test_auto_takes_a_kernel_only_where_it_computes_the_same_attention(
        family, dtype, mask, decode, backend, length, expected):
    assert attention_implementation(config(family), dtype, mask, decode, backend,
                                    length) == expected


def test_forced_choices():
    assert attention_implementation(config("gpt2-tiny", "xla"), BF16, None, False,
                                    "gpu") == "xla"
    assert attention_implementation(config("gpt2-tiny", "xla"), BF16, None, False,
                                    "tpu", 256) == "xla"
    assert attention_implementation(config("gpt2-tiny", "cudnn"), BF16, None, False,
                                    "cpu") == "cudnn"
    assert attention_implementation(config("gpt2-tiny", "splash"), BF16, None, False,
                                    "cpu", 256) == "splash"
    # Where the kernel cannot compute it, even a forced kernel stays on XLA.
    assert attention_implementation(config("gpt2-tiny", "cudnn"), jnp.float32, None, False,
                                    "gpu") == "xla"
    assert attention_implementation(config("gpt2-tiny", "splash"), BF16, None, False,
                                    "tpu", 200) == "xla"
    assert attention_implementation(config("gpt2-tiny", "splash"), BF16, GPT_QUERY_MASK,
                                    False, "tpu", 256) == "xla"


def test_unknown_choice_names_the_valid_ones():
    with pytest.raises(ConfigError, match="'flash'.*'splash'"):
        config("gpt2-tiny", "flash")


def test_the_backend_is_that_of_the_mesh_in_context():
    """Inside a trace the backend is the mesh's platform (a TPU topology's while `lmscale
    plan` compiles on a CPU: tests/plan/test_splash_compile.py), else JAX's default."""
    seen = []
    with jax.set_mesh(make_mesh({"data": 1}, jax.devices()[:1])):
        jax.jit(lambda: seen.append(traced_backend())).trace()
    assert seen == ["cpu"] and traced_backend() == jax.default_backend()


def test_default_is_auto():
    assert ModelConfig.from_dict(preset("gpt2")).attention_impl == "auto"


@pytest.mark.parametrize("name", ["gpt2-tiny", "bert-tiny"])
def test_cudnn_choice_reaches_the_fused_kernel(name):
    """On this CPU the kernel cannot run; tracing a model with cuDNN forced reaches JAX's
    cuDNN attention, whose version check is what refuses. (Its numerics against XLA's are
    checked on a GPU by benchmarks/accelerator_suite.py: docs/accelerator/.)"""
    cfg = dataclasses.replace(config(name, "cudnn"), compute_dtype="bfloat16")
    ids = jnp.zeros((2, 16), jnp.int32)
    if cfg.family == "gpt":
        model, args = GPT(cfg), (ids,)
    else:
        model, args = BertModel(cfg), (ids, jnp.zeros_like(ids), jnp.ones_like(ids))
    auto = type(model)(dataclasses.replace(cfg, attention_impl="auto"))  # XLA on a CPU
    params = jax.eval_shape(auto.init, jax.random.key(0), *args)
    jax.make_jaxpr(auto.apply)(params, *args)
    with pytest.raises(RuntimeError, match="cuDNN"):
        jax.make_jaxpr(model.apply)(params, *args)


# Three 128-token blocks: the causal mask skips whole blocks and cuts through others, and
# padding starts inside a block.
LENGTH = 384


def random_qkv(dtype, batch=2, heads=2, head_dim=64):
    keys = jax.random.split(jax.random.key(0), 3)
    return [jax.random.normal(key, (batch, LENGTH, heads, head_dim), dtype) for key in keys]


def xla_attention(q, k, v, causal, key_mask):
    mask = None if key_mask is None else key_mask[:, None, None, :]
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal,
                                        implementation="xla")


def splash(q, k, v, causal, key_mask):
    return splash_attention(q, k, v, causal=causal, key_mask=key_mask, interpret=True)


def sin_sum(attention, causal, key_mask):
    """A loss whose gradient differs at every output element of the examples that have a
    real token; like every loss, it gives examples that are all padding no weight."""
    def loss(q, k, v):
        out = attention(q, k, v, causal, key_mask)
        weight = 1.0 if key_mask is None else jnp.any(key_mask, axis=1)[:, None, None, None]
        return jnp.sum(jnp.sin(out) * weight)
    return loss


# Real tokens per example: padding inside the last block, most of the sequence padding,
# and an example that is all padding (an eval batch's filler row). Its outputs match XLA's
# (the mean of the values); the gradients splash's backward pass gives q and k of such an
# example differ from XLA's zeros unless the loss ignores it, as losses do.
PADDING = jnp.arange(LENGTH)[None, :] < jnp.array([300, 100, 0])[:, None]


@pytest.mark.parametrize("causal, key_mask", [(True, None), (False, PADDING)],
                         ids=["gpt-causal", "bert-padding"])
def test_splash_matches_xla_in_float32(causal, key_mask):
    q, k, v = random_qkv(jnp.float32, batch=3)
    want = xla_attention(q, k, v, causal, key_mask)
    got = jax.jit(splash, static_argnums=3)(q, k, v, causal, key_mask)
    assert bool(jnp.all(jnp.isfinite(got)))
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=0)
    want_grads = jax.grad(sin_sum(xla_attention, causal, key_mask), (0, 1, 2))(q, k, v)
    got_grads = jax.jit(jax.grad(sin_sum(splash, causal, key_mask), (0, 1, 2)))(q, k, v)
    for got_grad, want_grad in zip(got_grads, want_grads):
        np.testing.assert_allclose(got_grad, want_grad, atol=2e-5, rtol=0)


def test_splash_in_bfloat16_is_as_close_to_float32_as_xla():
    q, k, v = random_qkv(jnp.bfloat16)
    exact = xla_attention(*(x.astype(jnp.float32) for x in (q, k, v)), True, None)
    xla = xla_attention(q, k, v, True, None).astype(jnp.float32)
    got = jax.jit(splash, static_argnums=3)(q, k, v, True, None).astype(jnp.float32)
    # Outputs up to ~2 are rounded to bf16 (a unit in the last place there is 2^-7); XLA
    # also rounds the probabilities before ·v, splash keeps them in float32.
    np.testing.assert_allclose(xla, exact, atol=1e-2, rtol=0)
    np.testing.assert_allclose(got, exact, atol=1e-2, rtol=0)


def sharded_grads(model, params, args, mesh):
    """Outputs and parameter gradients of sum(sin(outputs)), traced under `mesh`."""
    def loss(params):
        out = model.apply(params, *args)
        out = out[0] if isinstance(out, tuple) else out
        return jnp.sum(jnp.sin(out)), out
    with mesh_context(mesh):
        (_, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return out, grads


@pytest.mark.parametrize("name", ["gpt2-tiny", "bert-tiny"])
def test_models_with_splash_match_xla_on_a_sharded_mesh(name):
    """The whole model, batch split over data x fsdp and heads over tensor: the kernel runs
    under shard_map on each device's examples and heads (interpreted on this CPU)."""
    length = 256  # one 256-token block: the kernel's blocks are tested above
    cfg = ModelConfig.from_dict(preset(name, max_len=length, num_layers=1, dropout=0.0))
    ids = jax.random.randint(jax.random.key(1), (4, length), 0, cfg.vocab_size)
    if cfg.family == "gpt":
        model_cls, args = GPT, (ids,)
    else:
        real = jnp.arange(length)[None, :] < jnp.array([length, 200, 129, 7])[:, None]
        model_cls, args = BertModel, (ids, jnp.zeros_like(ids), real.astype(jnp.int32))
    params = nn.unbox(model_cls(cfg).init(jax.random.key(0), *args))
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    want, want_grads = sharded_grads(model_cls(cfg), params, args, mesh)
    got, got_grads = sharded_grads(
        model_cls(dataclasses.replace(cfg, attention_impl="splash")), params, args, mesh)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)
    # The whole gradient's difference relative to its size (elementwise ratios are noise
    # for the key bias, whose exact gradient is zero: softmax ignores a per-query shift).
    flat_got, flat_want = (jnp.concatenate([g.ravel() for g in jax.tree.leaves(t)])
                           for t in (got_grads, want_grads))
    relative = float(jnp.linalg.norm(flat_got - flat_want) / jnp.linalg.norm(flat_want))
    assert relative < 1e-6
