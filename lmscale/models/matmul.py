"""The model's matmuls: inputs in the compute dtype, float32 accumulation and output, and a
backward pass whose matmuls take compute-dtype inputs too.

`jax.lax.dot_general(x, w, preferred_element_type=float32)` alone gives the forward pass
that mixed precision wants, but its transpose multiplies the float32 cotangent with the
bf16 operand, which XLA runs as a float32 matmul: two thirds of a train step's matmul
FLOPs, at float32 speed (on this repository's CPU host a bf16 matmul with AMX runs 2-3x
faster than float32; GPUs lose their bf16 tensor-core rate the same way). `matmul` rounds
the cotangent to the compute dtype first, as PyTorch autocast and bf16 Flax models (whose
activations are bf16 throughout) do. Each gradient matmul accumulates in float32. The input
gradient is returned in the input's (compute) dtype, as `dot_general`'s own transpose does;
the weight gradient in the weight's own dtype, straight from the float32 accumulator: the
weight is cast to the compute dtype inside the `custom_vjp`, so a float32 parameter's
gradient is not rounded to bf16 and cast back (PyTorch autocast does round it), which on
XLA:CPU is two more passes over every weight gradient.

A `custom_vjp` hides its dot from `jax.checkpoint`'s dot policies: the layers that call it
name their outputs for the remat policy instead (`layers.PROJECTION_NAME`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
# ((lhs contracting axes), (rhs contracting axes)); no batch axes.
Contraction = tuple[tuple[int, ...], tuple[int, ...]]


def matmul(x: jax.Array, w: jax.Array, contraction: Contraction, dtype) -> jax.Array:
    """x·w contracting `contraction`'s axes, computed in `dtype` with a float32 result;
    the other axes of x come first, then those of w (as `jax.lax.dot_general`)."""
    return _dot(x.astype(dtype), w, contraction, jnp.dtype(w.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _dot(x: jax.Array, w: jax.Array, contraction: Contraction, w_dtype) -> jax.Array:
    """x·w in x's dtype (w, of `w_dtype`, is cast to it), float32 result."""
    return _dot_forward(x, w, contraction, w_dtype)[0]


def _dot_forward(x, w, contraction, w_dtype):
    del w_dtype  # the backward pass's: the weight gradient's dtype
    w = w.astype(x.dtype)
    y = jax.lax.dot_general(x, w, (contraction, ((), ())), preferred_element_type=jnp.float32)
    return y, (x, w)


def _dot_backward(contraction, w_dtype, residuals, g):
    x, w = residuals
    g = g.astype(x.dtype)
    x_axes, w_axes = contraction
    x_kept = [a for a in range(x.ndim) if a not in x_axes]
    w_kept = [a for a in range(w.ndim) if a not in w_axes]
    g_of_x = tuple(range(len(x_kept)))  # g's axes: x's kept axes, then w's
    g_of_w = tuple(range(len(x_kept), g.ndim))
    # dx = g·w over w's kept axes: [x kept..., w's contracted axes in w's order].
    dx = jax.lax.dot_general(g, w, ((g_of_w, tuple(w_kept)), ((), ())),
                             preferred_element_type=jnp.float32)
    dx_axes = x_kept + [x_axes[w_axes.index(a)] for a in sorted(w_axes)]
    dx = jnp.transpose(dx, np.argsort(dx_axes))  # the identity is free
    # dw = xᵀ·g over x's kept axes, in whichever operand order needs no transpose when
    # w's kept axes come first (the embedding table [vocab, d] of a tied head).
    if w_kept and w_axes and max(w_kept) < min(w_axes):
        dw = jax.lax.dot_general(g, x, ((g_of_x, tuple(x_kept)), ((), ())),
                                 preferred_element_type=jnp.float32)
        dw_axes = w_kept + [w_axes[x_axes.index(a)] for a in sorted(x_axes)]
    else:
        dw = jax.lax.dot_general(x, g, ((tuple(x_kept), g_of_x), ((), ())),
                                 preferred_element_type=jnp.float32)
        dw_axes = [w_axes[x_axes.index(a)] for a in sorted(x_axes)] + w_kept
    dw = jnp.transpose(dw, np.argsort(dw_axes))  # the identity is free
    return dx.astype(x.dtype), dw.astype(w_dtype)


_dot.defvjp(_dot_forward, _dot_backward)
