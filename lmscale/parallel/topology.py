"""Cloud TPU slices as JAX devices without the hardware: `jax.experimental.topologies`
describes a slice's devices (libtpu must be installed), and programs compile for them
ahead of time on any machine.

Accelerator types use Cloud TPU's names (`v4-32`, `v5litepod-16` = `v5e-16`, `v5p-128`,
`v6e-64`); several slices (multislice, joined over the data-centre network) are asked for
with `slices`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from lmscale.errors import ConfigError
from lmscale.parallel.chips import Chip, chips_in_accelerator_type


@dataclass(frozen=True)
class Target:
    accelerator_type: str
    chip: Chip
    chips: int  # per slice
    slices: int = 1

    @property
    def devices(self) -> int:
        return self.chips * self.chip.devices_per_chip * self.slices

    @property
    def topology_name(self) -> str:
        """"v5e:4x4", "v4:2x2x4": the chip grid of one slice."""
        return f"{self.chip.topology_prefix}:{'x'.join(map(str, self.grid))}"

    @property
    def grid(self) -> tuple[int, ...]:
        """The slice's chip grid: 2-D for v2/v3/v5e/v6e, 3-D tori for v4/v5p, as Cloud TPU
        lays them out (powers of two, as square as possible)."""
        dims = 3 if self.chip.name in ("v4", "v5p") else 2
        return balanced_grid(self.chips, dims)

    def describe(self) -> str:
        slices = f" x {self.slices} slices" if self.slices > 1 else ""
        return (f"{self.accelerator_type}{slices}: {self.chips * self.slices} {self.chip.name} "
                f"chips, {self.devices} devices ({self.topology_name})")


def balanced_grid(chips: int, dims: int) -> tuple[int, ...]:
    if chips < 1 or chips & (chips - 1):
        raise ConfigError(f"{chips} chips is not a power of two; Cloud TPU slices are")
    exponent = int(math.log2(chips))
    grid = [2 ** (exponent // dims + (1 if i >= dims - exponent % dims else 0))
            for i in range(dims)]
    # Slices smaller than a cube keep their unit axes last (v4-8 is 2x2x1).
    return tuple(sorted(grid, key=lambda n: n == 1))


def parse_target(accelerator_type: str, slices: int = 1) -> Target:
    chip, chips = chips_in_accelerator_type(accelerator_type)
    if slices < 1:
        raise ConfigError(f"--slices must be at least 1, got {slices}")
    target = Target(accelerator_type, chip, chips, slices)
    target.grid  # noqa: B018 - refuses chip counts that are not a slice shape
    return target


def topology_devices(target: Target) -> list:
    """The target's devices as a topology description (no hardware needed)."""
    # libtpu otherwise holds a lock file that lets one process per machine use it.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    try:
        from jax.experimental import topologies
        bounds = tuple(min(b, g) for b, g in zip(target.chip.chips_per_host_bounds,
                                                 (*target.grid, 1, 1)))
        topology = topologies.get_topology_desc(
            platform="tpu", topology_name=target.topology_name,
            chip_config_name=target.chip.chip_config_name, chips_per_host_bounds=bounds,
            num_slices=target.slices)
    except Exception as err:  # noqa: BLE001 - libtpu missing or the shape refused
        raise ConfigError(
            f"cannot describe {target.describe()}: {err}. Compiling for TPUs needs libtpu "
            "(pip install -e '.[tpu]')") from err
    return list(topology.devices)
