"""`lmscale.models.matmul`: the gradients of plain `dot_general`, with the backward
matmuls in the compute dtype, and the remat policies still saving the projections."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from lmscale.models import ModelConfig
from lmscale.models.layers import remat_policy
from lmscale.models.matmul import matmul

# (x shape, w shape, contraction): a Dense layer, the attention projections ([d] ->
# [heads, head_dim] and back, contracting two axes) and the tied head against [vocab, d].
CASES = [
    ((4, 6, 8), (8, 5), ((2,), (0,))),
    ((4, 6, 8), (8, 3, 2), ((2,), (0,))),
    ((4, 6, 3, 2), (3, 2, 8), ((2, 3), (0, 1))),
    ((4, 6, 8), (7, 8), ((2,), (1,))),
]


def _reference(x, w, contraction, dtype):
    return jax.lax.dot_general(x.astype(dtype), w.astype(dtype), (contraction, ((), ())),
                               preferred_element_type=jnp.float32)


@pytest.mark.parametrize("x_shape,w_shape,contraction", CASES)
def test_float32_gradients_equal_dot_general(x_shape, w_shape, contraction):
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, x_shape)
    w = jax.random.normal(kw, w_shape)
    out, pull = jax.vjp(lambda x, w: matmul(x, w, contraction, jnp.float32), x, w)
    ref_out, ref_pull = jax.vjp(lambda x, w: _reference(x, w, contraction, jnp.float32), x, w)
    g = jax.random.normal(kg, out.shape)
    np.testing.assert_allclose(out, ref_out, rtol=1e-6)
    for got, want in zip(pull(g), ref_pull(g)):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("x_shape,w_shape,contraction", CASES)
def test_bfloat16_gradients_close_and_every_matmul_in_bfloat16(x_shape, w_shape, contraction):
    kx, kw, kg = jax.random.split(jax.random.key(1), 3)
    x = jax.random.normal(kx, x_shape)
    w = jax.random.normal(kw, w_shape)

    def loss(x, w):
        return jnp.sum(jnp.sin(matmul(x, w, contraction, jnp.bfloat16)))

    def ref_loss(x, w):
        return jnp.sum(jnp.sin(_reference(x, w, contraction, jnp.float32)))

    grads, ref_grads = jax.grad(loss, (0, 1))(x, w), jax.grad(ref_loss, (0, 1))(x, w)
    for got, want in zip(grads, ref_grads):
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(got, want, rtol=0.05, atol=0.05 * float(jnp.abs(want).max()))
    # Plain dot_general's transpose multiplies the float32 cotangent: float32 matmuls.
    jaxpr = jax.make_jaxpr(jax.grad(loss, (0, 1)))(x, w)
    dots = [e for e in _equations(jaxpr.jaxpr) if e.primitive.name == "dot_general"]
    assert len(dots) == 3
    assert all(v.aval.dtype == jnp.bfloat16 for e in dots for v in e.invars)


def _equations(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            yield from _equations(sub)


@pytest.mark.parametrize("policy", ["dots", "dots_no_batch"])
def test_dot_remat_policies_save_the_matmuls(policy):
    """The projections' dots sit in a custom_vjp; the dot policies must still save their
    outputs (recomputing only the cheap elementwise work), not recompute every matmul."""
    x = jnp.ones((4, 8))
    w1, w2 = jnp.ones((8, 16)), jnp.ones((16, 8))

    def block(x, w1, w2):
        h = jnp.tanh(matmul(x, w1, ((1,), (0,)), jnp.bfloat16))
        return matmul(h, w2, ((1,), (0,)), jnp.bfloat16)

    step = jax.checkpoint(block, policy=remat_policy(policy))
    grad = jax.grad(lambda *a: jnp.sum(step(*a)), argnums=(1, 2))
    dots = [e for e in _equations(jax.make_jaxpr(grad)(x, w1, w2).jaxpr)
            if e.primitive.name == "dot_general"]
    # Two forward matmuls and four backward ones; recomputing would add the first again.
    assert len(dots) == 6
    full = jax.checkpoint(block, policy=remat_policy("full"))
    full_grad = jax.grad(lambda *a: jnp.sum(full(*a)), argnums=(1, 2))
    full_dots = [e for e in _equations(jax.make_jaxpr(full_grad)(x, w1, w2).jaxpr)
                 if e.primitive.name == "dot_general"]
    assert len(full_dots) == 7


def test_gpt_bfloat16_train_gradients_use_bfloat16_matmuls():
    from lmscale.models import GPT

    cfg = ModelConfig(family="gpt", vocab_size=64, d_model=16, num_heads=2, num_layers=2,
                      d_ff=32, max_len=8, compute_dtype="bfloat16", dropout=0.0)
    model = GPT(cfg)
    ids = jnp.zeros((2, 8), jnp.int32)
    params = model.init(jax.random.key(0), ids)

    def loss(params):
        return jnp.mean(model.apply(params, ids))

    jaxpr = jax.make_jaxpr(jax.grad(loss))(params)
    dots = [e for e in _equations(jaxpr.jaxpr) if e.primitive.name == "dot_general"
            and all(len(v.aval.shape) >= 2 for v in e.invars)
            and not e.params["dimension_numbers"][1][0]]  # projections: no batch axes
    assert dots
    float32_dots = [e for e in dots if any(v.aval.dtype == jnp.float32 for v in e.invars)]
    assert not float32_dots, f"{len(float32_dots)} of {len(dots)} matmuls take float32"
