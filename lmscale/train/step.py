"""The pure train step and eval step, and their sharded compilation.

`train_step(state, batch) -> (state, metrics)` is one pure function: forward, backward
(optionally accumulated over micro-batches), clipping and the optimiser update. It is
jitted once with explicit in/out shardings and the state donated.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding

from lmscale.errors import ConfigError
from lmscale.models.config import ModelConfig, check_tensor_parallel
from lmscale.parallel.mesh import (
    batch_sharding, data_parallel_size, logical_to_sharding, mesh_context, process_batch_rows,
    replicated,
)
from lmscale.train.state import TrainState

Batch = dict[str, Any]


def model_for_mesh(model_cfg: ModelConfig, mesh: Mesh) -> ModelConfig:
    """The model as laid out on `mesh`: the tensor axis must divide its heads and MLP
    width, and its vocabulary is padded to a multiple of 128 x the tensor size."""
    tensor = mesh.shape.get("tensor", 1)
    check_tensor_parallel(model_cfg, tensor)
    return model_cfg.for_tensor_parallel(tensor)


def check_batch_split(batch_size: int, grad_accum: int, mesh: Mesh) -> None:
    """Refuse a batch that does not split into micro-batches over the data-parallel devices."""
    ways = data_parallel_size(mesh)
    if batch_size % grad_accum or (batch_size // grad_accum) % ways:
        raise ConfigError(
            f"train.batch_size ({batch_size}) must split into train.grad_accum_steps "
            f"({grad_accum}) micro-batches that divide over the {ways} data-parallel "
            f"devices (mesh data x fsdp)")


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
                    schedule: optax.Schedule, grad_accum_steps: int, dropout_seed: int,
                    param_shardings: Any = None, branch_on_finite: bool = False,
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
    """`param_shardings` (optional) lays the accumulated gradients out like the parameters;
    without it the compiler chooses the carry's layout and may replicate it.

    A step whose loss or gradient norm is not finite returns the state it was given: by
    selecting between the updated and the old state, or with `branch_on_finite`, by a
    conditional around the update (`updates_by_branch` says which a backend wants)."""
    def like_params(grads):
        if param_shardings is None:
            return grads
        return jax.lax.with_sharding_constraint(grads, param_shardings)

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
                total_loss, total_sums, total_grads = carry
                return (total_loss + loss, jax.tree.map(jnp.add, total_sums, sums),
                        like_params(jax.tree.map(jnp.add, total_grads, grads))), None

            micro = _split_micro_batches(batch, grad_accum_steps)
            zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(
                grad_fn, state.params, jax.tree.map(lambda x: x[0], micro), rng))
            (loss, sums, grads), _ = jax.lax.scan(
                accumulate, (zeros[0][0], zeros[0][1], like_params(zeros[1])),
                (micro, jnp.arange(grad_accum_steps)))

        grad_norm = optax.tree.norm(grads)
        # A non-finite loss or gradient keeps the last good state; the loop stops on it.
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

        def update(state: TrainState) -> TrainState:
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            return TrainState(step=state.step + 1,
                              params=optax.apply_updates(state.params, updates),
                              opt_state=opt_state)

        if branch_on_finite:
            new_state = jax.lax.cond(finite, update, lambda state: state, state)
        else:
            new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                                     update(state), state)
        metrics = {name: sums[name] / jnp.maximum(counts[name], 1.0) for name in sums}
        metrics |= {"loss": loss, "grad_norm": grad_norm,
                    "learning_rate": schedule(state.step), "finite": finite}
        return new_state, metrics

    return train_step


def make_eval_step(objective, num_micro: int = 1) -> Callable[[Any, Batch], tuple[dict, dict]]:
    """Summed terms and their counts for one batch, so callers can average over many.

    The batch is evaluated in `num_micro` pieces, as training splits it, so evaluating at
    the training batch size needs no more memory than a training micro-batch.
    """
    def eval_step(params, batch: Batch):
        counts = objective.term_counts(batch)
        if num_micro == 1:
            return objective.term_sums(params, batch, None), counts

        def add(total, micro_batch):
            sums = objective.term_sums(params, micro_batch, None)
            return jax.tree.map(jnp.add, total, sums), None

        micro = _split_micro_batches(batch, num_micro)
        zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(
            objective.term_sums, params, jax.tree.map(lambda x: x[0], micro), None))
        sums, _ = jax.lax.scan(add, zeros, micro)
        return sums, counts
    return eval_step


@dataclass
class ShardedStep:
    """The train state's shardings and the compiled train/eval steps for one mesh.

    `train_jit` / `evaluate_jit` are the jitted functions themselves; they must be traced
    under `mesh_context(mesh)`, which `train`, `evaluate` and `lower_*` do. `lower_*` build
    the programs from shapes alone, so they also compile for devices that are only a
    topology description (`lmscale plan`).
    """

    mesh: Mesh
    abstract_state: TrainState
    state_shardings: TrainState
    batch_specs: dict[str, jax.ShapeDtypeStruct]  # global shapes, with their shardings
    train_jit: Any
    evaluate_jit: Any
    init_jit: Any

    def train(self, state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
        with mesh_context(self.mesh):
            return self.train_jit(state, batch)

    def evaluate(self, params, batch: Batch) -> tuple[dict, dict]:
        with mesh_context(self.mesh):
            return self.evaluate_jit(params, batch)

    def init(self, rng: jax.Array) -> TrainState:
        with mesh_context(self.mesh):
            return self.init_jit(rng)

    def lower_train(self):
        state = jax.tree.map(_with_sharding, self.abstract_state, self.state_shardings)
        with mesh_context(self.mesh):
            return self.train_jit.lower(state, self.batch_specs)

    def lower_evaluate(self):
        params = jax.tree.map(_with_sharding, self.abstract_state.params,
                              self.state_shardings.params)
        rows = next(iter(self.batch_specs.values())).shape[0]
        weight = jax.ShapeDtypeStruct((rows,), jnp.float32,
                                      sharding=batch_sharding(self.mesh, 1))
        with mesh_context(self.mesh):
            return self.evaluate_jit.lower(params, self.batch_specs | {"example_weight": weight})

    @functools.cached_property
    def _batch_shards(self) -> tuple[int, int]:
        """(batch shards in the mesh, how many of them this process holds), once per mesh
        rather than once per step."""
        shards = data_parallel_size(self.mesh)
        return shards, len(process_batch_rows(self.mesh, shards))  # one row per shard

    def global_batch(self, local_batch: dict[str, np.ndarray]) -> Batch:
        """This process's rows of a global batch (those `process_batch_rows` names, in that
        order) -> one global array per key.

        The global shape is given, not left to JAX to infer: it follows from the share of
        the batch shards this process's devices hold, which also covers processes that are
        replicas of the same rows (the tensor axis spanning hosts) and devices that hold
        rows far apart.
        """
        shards, held = self._batch_shards

        def place(x):
            x = as_device_dtype(x)
            global_shape = (x.shape[0] * shards // held, *x.shape[1:])
            return jax.make_array_from_process_local_data(batch_sharding(self.mesh, x.ndim), x,
                                                          global_shape)
        return {k: place(v) for k, v in local_batch.items()}


def _with_sharding(shape: jax.ShapeDtypeStruct, sharding: NamedSharding) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=sharding)


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
    """(abstract unboxed state, its NamedShardings) from the model's logical axis names.

    Only shapes are computed (the key is made inside the trace): nothing runs on the mesh's
    devices, which may be a topology description with no device behind it.
    """
    with mesh_context(mesh):
        boxed = jax.eval_shape(lambda batch: objective.init(jax.random.key(0), batch),
                               example_batch)
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


def updates_by_branch(mesh: Mesh) -> bool:
    """Whether the step keeps its last good state by a conditional (XLA's CPU backend) or a
    select (TPU, GPU). XLA:CPU has no multi-output fusion: under a select it recomputes
    Adam's new moments inside the parameters' update, reading the old ones after their
    donated buffers were overwritten, so it first copies both moments whole (43
    parameter-sized copies in a GPT-2 small step); the conditional needs none and makes
    the step 7-12% faster on this repository's 2-core host. On TPU the select fuses with no
    copies, and the conditional adds them (26 in gpt2_small on v5e-4)."""
    return mesh.devices.flat[0].platform == "cpu"


def build_sharded_step(objective, optimizer, schedule, mesh: Mesh, example_batch: Batch,
                       grad_accum_steps: int = 1, dropout_seed: int = 0) -> ShardedStep:
    """`example_batch` gives the global batch's keys, shapes and dtypes (arrays or
    `jax.ShapeDtypeStruct`s); its values are not used."""
    shapes = {k: jax.ShapeDtypeStruct(np.shape(v), _device_dtype(v))
              for k, v in example_batch.items()}
    abstract, shardings = state_shardings(objective, optimizer, shapes, mesh)
    batch_shardings = {k: batch_sharding(mesh, len(v.shape)) for k, v in shapes.items()}
    batch_specs = {k: _with_sharding(v, batch_shardings[k]) for k, v in shapes.items()}
    metric_sharding = replicated(mesh)

    def init_state(rng):
        zeros = {k: jnp.zeros(v.shape, v.dtype) for k, v in shapes.items()}
        params = nn.unbox(objective.init(rng, zeros))
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=optimizer.init(params))

    step = make_train_step(objective, optimizer, schedule, grad_accum_steps, dropout_seed,
                           shardings.params, branch_on_finite=updates_by_branch(mesh))
    train = jax.jit(step, in_shardings=(shardings, batch_shardings),
                    out_shardings=(shardings, metric_sharding), donate_argnums=0)
    # Evaluation batches also carry `example_weight` (see `loop.evaluate`).
    eval_batch_shardings = batch_shardings | {"example_weight": batch_sharding(mesh, 1)}
    evaluate = jax.jit(make_eval_step(objective, grad_accum_steps),
                       in_shardings=(shardings.params, eval_batch_shardings),
                       out_shardings=metric_sharding)
    init = jax.jit(init_state, out_shardings=shardings)
    return ShardedStep(mesh=mesh, abstract_state=abstract, state_shardings=shardings,
                       batch_specs=batch_specs, train_jit=train, evaluate_jit=evaluate,
                       init_jit=init)


def _device_dtype(x) -> np.dtype:
    if isinstance(x, jax.ShapeDtypeStruct):
        return np.dtype(x.dtype)
    return as_device_dtype(x).dtype
