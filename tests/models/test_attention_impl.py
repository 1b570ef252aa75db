"""Which attention kernel a layer takes: cuDNN flash attention on GPUs where it computes
exactly the same attention, XLA's everywhere else (`layers.attention_implementation`)."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest

from lmscale.models import BertModel, GPT, ModelConfig, preset
from lmscale.models.layers import attention_implementation

BF16 = jnp.bfloat16
BERT_MASK = jnp.ones((2, 1, 1, 16), bool)  # [batch, 1, 1, keys]: right padding
GPT_QUERY_MASK = jnp.ones((2, 1, 16, 16), bool)  # per-query: packed segments, decoding


def config(name: str, impl: str = "auto") -> ModelConfig:
    return ModelConfig.from_dict(preset(name, attention_impl=impl))


@pytest.mark.parametrize("family, dtype, mask, decode, backend, expected", [
    ("gpt2-tiny", BF16, None, False, "gpu", "cudnn"),  # GPT pretraining on a GPU
    ("bert-tiny", BF16, BERT_MASK, False, "gpu", "cudnn"),  # padding becomes key lengths
    ("gpt2-tiny", BF16, None, False, "cpu", "xla"),
    ("gpt2-tiny", BF16, None, False, "tpu", "xla"),
    ("gpt2-tiny", jnp.float32, None, False, "gpu", "xla"),  # cuDNN has no float32 kernel
    ("gpt2-tiny", BF16, BERT_MASK, False, "gpu", "xla"),  # GPT masks are left padding
    ("gpt2-tiny", BF16, GPT_QUERY_MASK, False, "gpu", "xla"),
    ("gpt2-tiny", BF16, None, True, "gpu", "xla"),  # the KV cache's per-query mask
])
def test_auto_takes_cudnn_only_where_it_computes_the_same_attention(
        family, dtype, mask, decode, backend, expected):
    assert attention_implementation(config(family), dtype, mask, decode, backend) == expected


def test_forced_choices():
    assert attention_implementation(config("gpt2-tiny", "xla"), BF16, None, False,
                                    "gpu") == "xla"
    assert attention_implementation(config("gpt2-tiny", "cudnn"), BF16, None, False,
                                    "cpu") == "cudnn"
    # Where the kernel cannot compute it, even a forced "cudnn" stays on XLA.
    assert attention_implementation(config("gpt2-tiny", "cudnn"), jnp.float32, None, False,
                                    "gpu") == "xla"


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
