"""Schedules hit their documented values; weight decay skips LayerNorm and biases; clipping
matches optax."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lmscale.models import GPT, ModelConfig, preset
from lmscale.train.optimizer import (
    OptimizerConfig,
    clip_by_global_norm,
    decay_mask,
    make_optimizer,
    make_schedule,
)


def test_bert_schedule_warms_up_linearly_then_decays_to_zero():
    cfg = OptimizerConfig(learning_rate=1e-4, warmup_steps=10_000, schedule="linear")
    lr = make_schedule(cfg, 1_000_000)
    assert float(lr(0)) == 0.0
    assert float(lr(5_000)) == pytest.approx(5e-5)
    assert float(lr(10_000)) == pytest.approx(1e-4)
    assert float(lr(505_000)) == pytest.approx(5e-5, rel=1e-4)
    assert float(lr(1_000_000)) == pytest.approx(0.0, abs=1e-12)


def test_gpt_schedule_is_cosine_down_to_ten_percent():
    cfg = OptimizerConfig(learning_rate=6e-4, warmup_steps=100, schedule="cosine",
                          final_lr_fraction=0.1)
    lr = make_schedule(cfg, 1100)
    assert float(lr(50)) == pytest.approx(3e-4)
    assert float(lr(100)) == pytest.approx(6e-4)
    # Half-way through the decay the cosine is at the mean of peak and floor.
    assert float(lr(600)) == pytest.approx((6e-4 + 6e-5) / 2, rel=1e-5)
    assert float(lr(1100)) == pytest.approx(6e-5, rel=1e-5)


def test_weight_decay_applies_to_kernels_and_embeddings_only():
    model_cfg = ModelConfig.from_dict(preset("gpt2-tiny", vocab_size=64, max_len=8, d_model=16,
                                             num_heads=2, d_ff=32, num_layers=1))
    params = nn.unbox(GPT(model_cfg).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))
    mask = decay_mask(params)
    flat = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(mask)[0]}
    assert flat["['params']['wte']['embedding']"]
    assert flat["['params']['blocks']['mlp']['up']['kernel']"]
    assert not flat["['params']['blocks']['mlp']['up']['bias']"]
    assert not flat["['params']['blocks']['ln_attn']['norm']['scale']"]
    assert not flat["['params']['ln_f']['norm']['bias']"]

    # With zero gradients only decayed leaves move: by lr * weight_decay * value.
    cfg = OptimizerConfig(learning_rate=0.1, warmup_steps=0, schedule="constant",
                          weight_decay=0.5, clip_norm=None)
    opt = make_optimizer(cfg, 10)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = opt.update(zeros, opt.init(params), params)
    for path, update in jax.tree_util.tree_flatten_with_path(updates)[0]:
        value = params
        for key in path:
            value = value[key.key]
        expected = -0.05 * value if flat[jax.tree_util.keystr(path)] else 0 * value
        np.testing.assert_allclose(update, expected, rtol=1e-6, atol=1e-8)


def test_clip_by_global_norm_equals_optax():
    """lmscale's multiply-by-scale clipping gives optax's clipped gradients and state."""
    grads = {"a": jnp.array([3.0, -4.0]), "b": {"kernel": jnp.full((2, 3), 2.0)}}
    for max_norm in (0.5, 1e3):  # clipped, and left alone
        ours, optax_clip = clip_by_global_norm(max_norm), optax.clip_by_global_norm(max_norm)
        got, state = ours.update(grads, ours.init(grads))
        want, want_state = optax_clip.update(grads, optax_clip.init(grads))
        assert jax.tree.structure(state) == jax.tree.structure(want_state)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(g, w, rtol=1e-6)
    zeros = jax.tree.map(jnp.zeros_like, grads)
    got, _ = clip_by_global_norm(1.0).update(zeros, optax.EmptyState())
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(got))
