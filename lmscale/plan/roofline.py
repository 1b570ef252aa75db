"""A step-time estimate from the chip table: a roofline, not a measurement.

Per device, compute takes FLOPs / peak and memory traffic takes bytes accessed / HBM
bandwidth; the slower of the two is the step's on-chip time (perfect overlap of the two).
Collectives are added on top, as if none overlapped with computation, at the chip's ICI
bandwidth shared by its devices: an all-reduce moves its buffer twice (reduce-scatter then
all-gather), every other kind once. Real steps overlap much of the communication, so the
estimate errs slow; data-centre (multislice) links are not modelled.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmscale.parallel.chips import Chip, peak_flops
from lmscale.plan.analysis import Cost

PASSES = {"all-reduce": 2.0}

DEFINITION = ("estimate = max(FLOPs / peak, bytes accessed / HBM bandwidth) + collective "
              "bytes x passes / ICI bandwidth, per device; MFU = analytic model FLOPs "
              "(6N + 12LTd) / (estimate x peak x devices)")


@dataclass(frozen=True)
class Estimate:
    compute_seconds: float
    memory_seconds: float
    collective_seconds: float
    step_seconds: float
    tokens_per_sec: float
    mfu: float

    def to_json(self) -> dict:
        return {"compute_seconds": self.compute_seconds, "memory_seconds": self.memory_seconds,
                "collective_seconds": self.collective_seconds,
                "step_seconds": self.step_seconds, "tokens_per_sec": self.tokens_per_sec,
                "mfu": self.mfu}


def estimate(per_device: Cost, chip: Chip, compute_dtype: str, devices: int,
             model_flops: float, tokens: int) -> Estimate:
    peak = peak_flops(chip, compute_dtype)
    compute = per_device.flops / peak
    memory = per_device.bytes_accessed / chip.hbm_bytes_per_sec
    link = chip.ici_bytes_per_sec / chip.devices_per_chip
    collective = sum(PASSES.get(kind, 1.0) * size
                     for kind, size in per_device.collective_bytes.items()) / link
    step = max(compute, memory) + collective
    return Estimate(compute, memory, collective, step, tokens / step,
                    model_flops / (step * peak * devices))
