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
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


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


@contextlib.contextmanager
def mesh_context(mesh: Mesh):
    """Trace and run under `mesh` with the logical-axis rules active."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_AXIS_RULES):
        yield
