"""The pure train step and eval step, and their sharded compilation.

`train_step(state, batch) -> (state, metrics)` is one pure function: forward, backward
(optionally accumulated over micro-batches), clipping and the optimiser update. It is
jitted once with explicit in/out shardings and the state donated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding

from lmscale.parallel.mesh import batch_sharding, logical_to_sharding, mesh_context, replicated
from lmscale.train.state import TrainState

Batch = dict[str, Any]


def _split_micro_batches(batch: Batch, num_micro: int) -> Batch:
    """[B, ...] -> [num_micro, B / num_micro, ...]; micro-batch i holds rows i, i+A, i+2A...

    Reshaping to (B/A, A) and swapping keeps each device's rows on that device (a row
    block of a sharded batch stays within one shard), so no data moves between devices.
    """
    def split(x):
        x = x.reshape(x.shape[0] // num_micro, num_micro, *x.shape[1:])
        return jnp.swapaxes(x, 0, 1)
    return jax.tree.map(split, batch)


def make_train_step(objective, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule, grad_accum_steps: int,
                    dropout_seed: int) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
    def train_step(state: TrainState, batch: Batch):
        counts = objective.term_counts(batch)

        def loss_fn(params, micro_batch, rng):
            sums = objective.term_sums(params, micro_batch, rng)
            loss = sum(sums[t] / jnp.maximum(counts[t], 1.0) for t in objective.loss_terms)
            return loss, sums

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        rng = jax.random.fold_in(jax.random.key(dropout_seed), state.step)
        if grad_accum_steps == 1:
            (loss, sums), grads = grad_fn(state.params, batch, rng)
        else:
            def accumulate(carry, inputs):
                micro_batch, index = inputs
                (loss, sums), grads = grad_fn(state.params, micro_batch,
                                              jax.random.fold_in(rng, index))
                return jax.tree.map(jnp.add, carry, (loss, sums, grads)), None

            micro = _split_micro_batches(batch, grad_accum_steps)
            zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(
                grad_fn, state.params, jax.tree.map(lambda x: x[0], micro), rng))
            (loss, sums, grads), _ = jax.lax.scan(
                accumulate, (zeros[0][0], zeros[0][1], zeros[1]),
                (micro, jnp.arange(grad_accum_steps)))

        grad_norm = optax.tree.norm(grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        updated = TrainState(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                             opt_state=opt_state)
        # A non-finite loss or gradient keeps the last good state; the loop stops on it.
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state)
        metrics = {name: sums[name] / jnp.maximum(counts[name], 1.0) for name in sums}
        metrics |= {"loss": loss, "grad_norm": grad_norm,
                    "learning_rate": schedule(state.step), "finite": finite}
        return new_state, metrics

    return train_step


def make_eval_step(objective) -> Callable[[Any, Batch], tuple[dict, dict]]:
    """Summed terms and their counts for one batch, so callers can average over many."""
    def eval_step(params, batch: Batch):
        return objective.term_sums(params, batch, None), objective.term_counts(batch)
    return eval_step


@dataclass
class ShardedStep:
    """The train state's shardings and the compiled train/eval steps for one mesh."""

    mesh: Mesh
    state_shardings: TrainState
    train: Callable[[TrainState, Batch], tuple[TrainState, dict]]
    evaluate: Callable[[Any, Batch], tuple[dict, dict]]
    init: Callable[[jax.Array], TrainState]

    def global_batch(self, local_batch: dict[str, np.ndarray]) -> Batch:
        """Host-local rows (this process's share) -> one global array per key."""
        return {k: jax.make_array_from_process_local_data(batch_sharding(self.mesh, np.ndim(v)),
                                                          as_device_dtype(v))
                for k, v in local_batch.items()}


def as_device_dtype(x) -> np.ndarray:
    """64-bit host arrays (TFDS returns scalar features as Python ints) as the 32-bit types
    JAX uses, converted here rather than silently truncated with a warning."""
    x = np.asarray(x)
    if x.dtype == np.int64:
        return x.astype(np.int32)
    if x.dtype == np.float64:
        return x.astype(np.float32)
    return x


def state_shardings(objective, optimizer, example_batch: Batch,
                    mesh: Mesh) -> tuple[TrainState, TrainState]:
    """(abstract unboxed state, its NamedShardings) from the model's logical axis names."""
    with mesh_context(mesh):
        boxed = jax.eval_shape(objective.init, jax.random.key(0), example_batch)
    param_shardings = logical_to_sharding(nn.get_partition_spec(boxed), mesh)
    params = nn.unbox(boxed)
    opt_state = jax.eval_shape(optimizer.init, params)
    # Adam's moments mirror the parameters and take their shardings; counters replicate.
    opt_shardings = optax.tree_map_params(
        optimizer, lambda _, sharding: sharding, opt_state, param_shardings,
        transform_non_params=lambda _: replicated(mesh),
        is_leaf=lambda x: isinstance(x, NamedSharding))
    abstract = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params,
                          opt_state=opt_state)
    shardings = TrainState(step=replicated(mesh), params=param_shardings,
                           opt_state=opt_shardings)
    return abstract, shardings


def build_sharded_step(objective, optimizer, schedule, mesh: Mesh, example_batch: Batch,
                       grad_accum_steps: int = 1, dropout_seed: int = 0) -> ShardedStep:
    _, shardings = state_shardings(objective, optimizer, example_batch, mesh)
    batch_shardings = {k: batch_sharding(mesh, np.ndim(v)) for k, v in example_batch.items()}
    metric_sharding = replicated(mesh)

    shapes = {k: (np.shape(v), as_device_dtype(v).dtype) for k, v in example_batch.items()}

    def init_state(rng):
        zeros = {k: jnp.zeros(shape, dtype) for k, (shape, dtype) in shapes.items()}
        params = nn.unbox(objective.init(rng, zeros))
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=optimizer.init(params))

    train = jax.jit(make_train_step(objective, optimizer, schedule, grad_accum_steps, dropout_seed),
                    in_shardings=(shardings, batch_shardings),
                    out_shardings=(shardings, metric_sharding), donate_argnums=0)
    # Evaluation batches also carry `example_weight` (see `loop.evaluate`).
    eval_batch_shardings = batch_shardings | {"example_weight": batch_sharding(mesh, 1)}
    evaluate = jax.jit(make_eval_step(objective),
                       in_shardings=(shardings.params, eval_batch_shardings),
                       out_shardings=metric_sharding)
    init = jax.jit(init_state, out_shardings=shardings)

    def in_mesh(fn):
        def run(*args):
            with mesh_context(mesh):
                return fn(*args)
        return run

    return ShardedStep(mesh=mesh, state_shardings=shardings, train=in_mesh(train),
                       evaluate=in_mesh(evaluate), init=in_mesh(init))
