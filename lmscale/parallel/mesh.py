"""The device mesh and the one table that maps logical axis names onto it.

Mesh axes: `data` (pure data parallel: parameters replicated), `fsdp` (data parallel with
parameters and optimiser state sharded, ZeRO-3), `tensor` (Megatron-style: heads, MLP
width and vocabulary split). Which of these a run uses is only a matter of mesh sizes.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from lmscale.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")

# Logical name -> mesh axes. Parameters use `embed`/`mlp`/`heads`/`kv`/`vocab`; activations
# use `batch`/`length`/`act_*`, so that the embedding dimension of parameters can be
# FSDP-sharded while that of activations stays whole (the batch already uses `fsdp`).
LOGICAL_AXIS_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("embed", "fsdp"),
    ("embed_out", None),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
    ("positions", None),
    ("layers", None),
)


def resolve_mesh_shape(sizes: dict[str, int], num_devices: int) -> tuple[int, int, int]:
    """Mesh sizes from the config; one axis may be -1, meaning "all remaining devices"."""
    unknown = set(sizes) - set(MESH_AXES)
    if unknown:
        raise ConfigError(f"unknown mesh axes {sorted(unknown)}; valid: {MESH_AXES}")
    shape = [int(sizes.get(axis, 1)) for axis in MESH_AXES]
    if shape.count(-1) > 1:
        raise ConfigError("at most one mesh axis may be -1")
    if any(s == 0 or s < -1 for s in shape):
        raise ConfigError(f"mesh sizes must be positive or -1, got {dict(zip(MESH_AXES, shape))}")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if num_devices % known:
            raise ConfigError(
                f"mesh sizes {dict(zip(MESH_AXES, shape))} do not divide the {num_devices} devices"
            )
        shape[shape.index(-1)] = num_devices // known
    if math.prod(shape) != num_devices:
        raise ConfigError(
            f"mesh {dict(zip(MESH_AXES, shape))} needs {math.prod(shape)} devices but "
            f"{num_devices} are available; set one axis to -1 to use the rest"
        )
    return tuple(shape)


def make_mesh(sizes: dict[str, int], devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    shape = resolve_mesh_shape(sizes, len(devices))
    slices = len({getattr(d, "slice_index", 0) for d in devices})
    if slices == 1:
        return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3,
                             devices=devices)
    return _multislice_mesh(shape, slices, devices)


def _multislice_mesh(shape: tuple[int, int, int], slices: int, devices) -> Mesh:
    """Slices joined over the data-centre network carry a batch axis (`data`, else `fsdp`):
    only gradient reductions cross the slow links, as in MaxText's multislice default."""
    from jax.experimental import mesh_utils

    axis = next((i for i in (0, 1) if shape[i] % slices == 0), None)
    if axis is None:
        raise ConfigError(f"mesh {dict(zip(MESH_AXES, shape))} cannot span {slices} slices: "
                          f"mesh.data or mesh.fsdp must be a multiple of {slices}")
    per_slice = list(shape)
    per_slice[axis] //= slices
    across = [1, 1, 1]
    across[axis] = slices
    grid = mesh_utils.create_hybrid_device_mesh(per_slice, across, devices)
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * 3)


def data_parallel_size(mesh: Mesh) -> int:
    """How many ways the batch is split (`batch` maps to data x fsdp)."""
    return mesh.shape["data"] * mesh.shape["fsdp"]


def logical_to_sharding(logical_specs: Any, mesh: Mesh) -> Any:
    """A tree of logical PartitionSpecs -> a tree of NamedShardings on `mesh`."""
    return nn.logical_to_mesh_sharding(logical_specs, mesh, LOGICAL_AXIS_RULES)


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Leading axis split over data x fsdp, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp"), *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_rows_held(mesh: Mesh, global_batch_size: int, devices) -> np.ndarray:
    """[rows] ascending: the rows of a `global_batch_size`-row batch laid out by
    `batch_sharding` that any of `devices` holds."""
    indices = batch_sharding(mesh, 1).devices_indices_map((global_batch_size,))
    held: set[int] = set()
    for device in devices:
        held.update(range(*indices[device][0].indices(global_batch_size)))
    return np.array(sorted(held), dtype=np.int64)


def process_batch_rows(mesh: Mesh, global_batch_size: int) -> np.ndarray:
    """[rows] ascending: the rows of every global batch this process must load, those its
    devices hold. Processes whose devices are replicas of the same batch shards (the tensor
    axis spanning hosts, or fewer data x fsdp shards than processes) load the same rows;
    `jax.make_array_from_process_local_data` places them in this order."""
    return batch_rows_held(mesh, global_batch_size, mesh.local_devices)


def describe_rows(rows: np.ndarray) -> str:
    """Ascending row indices as ranges: [0..7, 16..23] -> "0:8, 16:24"."""
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    return ", ".join(f"{run[0]}:{run[-1] + 1}" for run in np.split(rows, breaks) if len(run))


def fetch_to_hosts(tree: Any) -> Any:
    """Every leaf of a tree of arrays, whole, as numpy on every process.

    `jax.device_get` cannot read an array with shards on other hosts (FSDP or tensor
    parallelism across hosts); such leaves are first gathered to a replicated layout, one
    leaf at a time, so devices hold at most one whole leaf beyond the sharded state. A
    collective: every process must call it with the same tree.
    """
    def fetch(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return multihost_utils.process_allgather(x, tiled=True)
        return np.asarray(jax.device_get(x))
    return jax.tree.map(fetch, tree)


@contextlib.contextmanager
def mesh_context(mesh: Mesh):
    """Trace and run under `mesh` with the logical-axis rules active."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_AXIS_RULES):
        yield
