"""`lmscale.models.matmul`: the gradients of plain `dot_general`, with the backward
matmuls in the compute dtype; and `layers.remat_policy`, whose dot policies save the
projections' outputs (the `custom_vjp` hides their dots) in the compute dtype."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmscale.models.layers import Projection, remat_policy
from lmscale.models.matmul import matmul

from jaxpr_dots import dot_generals

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
    dots = dot_generals(jax.grad(loss, (0, 1)), x, w)
    assert len(dots) == 3
    assert all(v.aval.dtype == jnp.bfloat16 for e in dots for v in e.invars)


# [..., 8] -> [..., 2 heads, 8] -> [..., 8], as attention's projections are.
UP = Projection((2, 8), ("embed", "heads", "kv"), jnp.bfloat16)
DOWN = Projection((8,), ("heads", "kv", "embed"), jnp.bfloat16, contract=2)


def _projection_block(x, up, down):
    return DOWN.apply(down, jnp.tanh(UP.apply(up, x)))


def _dots(policy_name, x, up, down):
    step = jax.checkpoint(_projection_block, policy=remat_policy(policy_name))
    grad = jax.grad(lambda *a: jnp.sum(step(*a).astype(jnp.float32)), argnums=(1, 2))
    return dot_generals(grad, x, up, down)


def _inputs():
    x = jnp.ones((4, 8), jnp.bfloat16)
    return x, UP.init(jax.random.key(0), x), DOWN.init(jax.random.key(1), jnp.ones((4, 2, 8)))


@pytest.mark.parametrize("policy", ["dots", "dots_no_batch"])
def test_dot_policies_save_the_projections_instead_of_recomputing_them(policy):
    x, up, down = _inputs()
    # Two forward matmuls and four backward ones; recomputing would add the first again.
    assert len(_dots(policy, x, up, down)) == 6
    assert len(_dots("full", x, up, down)) == 7


@pytest.mark.parametrize("policy", ["dots", "dots_no_batch"])
def test_saved_projection_outputs_are_flat_in_the_compute_dtype(policy, capsys):
    """Under bf16 compute the saved activation is bf16, not the float32 matmul result (half
    the bytes), and [..., heads x head_dim], not [..., heads, head_dim] (which a TPU
    kernel's layout pads when head_dim is under 128)."""
    x, up, down = _inputs()
    step = jax.checkpoint(_projection_block, policy=remat_policy(policy))
    jax.ad_checkpoint.print_saved_residuals(step, x, up, down)  # "<aval> <source>" lines
    saved = [line.split()[0] for line in capsys.readouterr().out.splitlines()
             if line and "from the argument" not in line]
    assert saved == ["bf16[4,16]"]
