"""Hardware facts for the accelerators lmscale plans for: one row per chip, with its source.

Every number is per JAX device (what `jax.devices()` lists), except `ici_bytes_per_sec`,
which is per chip. TPU v2 and v3 show each of a chip's two TensorCores as its own device,
so their per-device figures are half the per-chip figures that Google publishes; v4 and
v5p run "megacore", one device spanning both TensorCores of a chip.

Units are as the source prints them: "GiB" is 2**30 bytes, "GB" 1e9 bytes. Where a vendor
writes "GB" for a part that is really GiB-sized (v5e, v6e, the GPUs) the table is a few
percent low, which errs on the safe side for memory planning; on a live device
`device.memory_stats()["bytes_limit"]` is the number to trust.

`ici_bytes_per_sec` is the one-way total over all of a chip's inter-chip links: half the
"bidirectional" figure in the Cloud TPU tables, equal to their older "Interchip
Interconnect BW" in Gbit/s divided by 8, and equal to the pod's all-reduce bandwidth
divided by its chip count (51.2 TB/s / 256 = 200 GB/s for v5e, 102.4 TB/s / 256 =
400 GB/s for v6e); the last rule gives v3 and v4, whose pages print no per-chip figure.
For GPUs it is NVLink: NVIDIA quotes the two directions added, so the table holds half.
"""

from __future__ import annotations

import dataclasses

from lmscale.errors import ConfigError

GIB = 2**30

_CLOUD_TPU = "https://cloud.google.com/tpu/docs/"


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    platform: str  # "tpu" or "gpu"
    device_kinds: tuple[str, ...]  # TPU: exact `device.device_kind`; GPU: a substring of it
    hbm_bytes: int  # per JAX device
    peak_bf16_flops: float  # per JAX device, dense (no 2:4 sparsity)
    hbm_bytes_per_sec: float  # per JAX device
    ici_bytes_per_sec: float  # per chip, one way, all links together (NVLink for GPUs)
    devices_per_chip: int
    cores_per_device: int  # TensorCores behind one JAX device (2 under megacore)
    source: str
    peak_tf32_flops: float | None = None  # per device, dense; GPUs only
    # Cloud TPU accelerator types ("v4-32") count TensorCores (True) or chips (False).
    type_counts_cores: bool | None = None
    # For jax.experimental.topologies.get_topology_desc("v5e:4x4", ...).
    topology_prefix: str | None = None
    chip_config_name: str | None = None  # "megacore" or "default"
    chips_per_host_bounds: tuple[int, int, int] | None = None

    @property
    def cores_per_chip(self) -> int:
        return self.devices_per_chip * self.cores_per_device


def _tpu(**kwargs) -> Chip:
    # v5e and v6e hosts hold up to 8 chips, but the topology descriptions used here are
    # built with 2x2x1 hosts for every generation.
    return Chip(platform="tpu", chips_per_host_bounds=(2, 2, 1), **kwargs)


def _gpu(**kwargs) -> Chip:
    return Chip(platform="gpu", devices_per_chip=1, cores_per_device=1, **kwargs)


_TABLE = (
    # v2 chip: 16 GiB HBM (8 GiB per TensorCore), 45 TFLOP/s bf16 (Google's "180 TFLOP/s"
    # per 4-chip v2-8), 700 GB/s HBM, four ICI links of ~500 Gbit/s each. The Cloud TPU v2
    # page defers these to the papers. JAX's Pallas tpu_info rounds the chip to 46 TFLOP/s
    # and 716 GB/s; the published figures are kept.
    _tpu(name="v2", device_kinds=("TPU v2",), hbm_bytes=8 * GIB,
         peak_bf16_flops=45e12 / 2, hbm_bytes_per_sec=700e9 / 2, ici_bytes_per_sec=4 * 500e9 / 8,
         devices_per_chip=2, cores_per_device=1, type_counts_cores=True,
         topology_prefix="v2", chip_config_name="default",
         source=f"{_CLOUD_TPU}v2; Norrie et al., 'The Design Process for Google's Training "
                "Chips: TPUv2 and TPUv3', IEEE Micro 2021"),
    # v3 chip: 123 TFLOP/s bf16, 32 GiB, 900 GBps; pod all-reduce 340 TB/s over 1024 chips.
    # (tpu_info's 140 TFLOP/s and 825 GB/s disagree; the Cloud TPU page wins.)
    _tpu(name="v3", device_kinds=("TPU v3",), hbm_bytes=32 * GIB // 2,
         peak_bf16_flops=123e12 / 2, hbm_bytes_per_sec=900e9 / 2, ici_bytes_per_sec=340e12 / 1024,
         devices_per_chip=2, cores_per_device=1, type_counts_cores=True,
         topology_prefix="v3", chip_config_name="default",
         source=f"Cloud TPU 'TPU v3' system architecture, {_CLOUD_TPU}v3"),
    # v4 chip: 275 TFLOP/s bf16, 32 GiB, 1200 GBps; pod all-reduce 1.1 PB/s over 4096 chips.
    _tpu(name="v4", device_kinds=("TPU v4",), hbm_bytes=32 * GIB,
         peak_bf16_flops=275e12, hbm_bytes_per_sec=1200e9, ici_bytes_per_sec=1.1e15 / 4096,
         devices_per_chip=1, cores_per_device=2, type_counts_cores=True,
         topology_prefix="v4", chip_config_name="megacore",
         source=f"Cloud TPU 'TPU v4' system architecture, {_CLOUD_TPU}v4"),
    # v5e chip: 197 TFLOP/s bf16, "16 GB, 819 GBps", ICI 1600 Gbps = 400 GBps bidirectional.
    # A later revision of the page prints "800 GiBps" (859 GB/s); 819 GB/s is kept, as in
    # most revisions and in JAX's tpu_info (8.2e11).
    _tpu(name="v5e", device_kinds=("TPU v5 lite", "TPU v5e"), hbm_bytes=16 * 10**9,
         peak_bf16_flops=197e12, hbm_bytes_per_sec=819e9, ici_bytes_per_sec=1600e9 / 8,
         devices_per_chip=1, cores_per_device=1, type_counts_cores=False,
         topology_prefix="v5e", chip_config_name="default",
         source=f"Cloud TPU 'TPU v5e' system architecture, {_CLOUD_TPU}v5e"),
    # v5p chip: 459 TFLOP/s bf16, 95 GiB, 2765 GBps (= 2575 GiBps in a later revision),
    # ICI 4800 Gbps = 1200 GBps bidirectional. tpu_info's 2.46e12 B/s is not used.
    _tpu(name="v5p", device_kinds=("TPU v5", "TPU v5p"), hbm_bytes=95 * GIB,
         peak_bf16_flops=459e12, hbm_bytes_per_sec=2765e9, ici_bytes_per_sec=4800e9 / 8,
         devices_per_chip=1, cores_per_device=2, type_counts_cores=True,
         topology_prefix="v5p", chip_config_name="megacore",
         source=f"Cloud TPU 'TPU v5p' system architecture, {_CLOUD_TPU}v5p"),
    # v6e chip: 918 TFLOP/s bf16, 32 GB, 1638 GBps, 800 GBps bidirectional ICI. Earlier
    # revisions printed 1640 GBps and "3584 Gbps" ICI; the current page (and the pod's
    # 102.4 TB/s all-reduce over 256 chips) gives 400 GB/s one way.
    _tpu(name="v6e", device_kinds=("TPU v6 lite", "TPU v6e"), hbm_bytes=32 * 10**9,
         peak_bf16_flops=918e12, hbm_bytes_per_sec=1638e9, ici_bytes_per_sec=800e9 / 2,
         devices_per_chip=1, cores_per_device=1, type_counts_cores=False,
         topology_prefix="v6e", chip_config_name="default",
         source=f"Cloud TPU 'TPU v6e' system architecture, {_CLOUD_TPU}v6e"),
    # NVIDIA datasheets print tensor-core rates with 2:4 sparsity; dense is half.
    # A100 80GB SXM: BF16 312 (624 sparse), TF32 156 (312 sparse), 2,039 GB/s, NVLink 600 GB/s.
    _gpu(name="a100", device_kinds=("A100",), hbm_bytes=80 * 10**9,
         peak_bf16_flops=312e12, peak_tf32_flops=156e12, hbm_bytes_per_sec=2039e9,
         ici_bytes_per_sec=600e9 / 2,
         source="NVIDIA A100 Tensor Core GPU datasheet (A100 80GB SXM)"),
    # H100 SXM: BF16 1,979 and TF32 989 TFLOP/s sparse; dense 989.4 and 494.7 per the Hopper
    # whitepaper. 80 GB HBM3 at 3.35 TB/s, NVLink 900 GB/s.
    _gpu(name="h100", device_kinds=("H100",), hbm_bytes=80 * 10**9,
         peak_bf16_flops=989.4e12, peak_tf32_flops=494.7e12, hbm_bytes_per_sec=3.35e12,
         ici_bytes_per_sec=900e9 / 2,
         source="NVIDIA H100 Tensor Core GPU datasheet (H100 SXM); NVIDIA H100 (Hopper) "
                "architecture whitepaper"),
    # H200 SXM: the H100's GH100 die and clocks with 141 GB HBM3e at 4.8 TB/s, NVLink 900 GB/s.
    _gpu(name="h200", device_kinds=("H200",), hbm_bytes=141 * 10**9,
         peak_bf16_flops=989.4e12, peak_tf32_flops=494.7e12, hbm_bytes_per_sec=4.8e12,
         ici_bytes_per_sec=900e9 / 2,
         source="NVIDIA H200 Tensor Core GPU datasheet (H200 SXM)"),
)

CHIPS: dict[str, Chip] = {chip.name: chip for chip in _TABLE}

# Accelerator-type prefixes that are not the chip name ("v5litepod-16" is a v5e slice).
# (The v6e page words its suffix as a TensorCore count, but a v6e chip has one TensorCore,
# so cores and chips agree for it and for v5e.)
_ACCELERATOR_PREFIXES = {"v5litepod": "v5e"}


def chip_for_device_kind(kind: str) -> Chip | None:
    """The chip behind a `device.device_kind`, or None for hardware not in the table.

    GPU kinds are matched by substring ("NVIDIA H100 80GB HBM3" is an h100), so PCIe and
    smaller-memory variants get the SXM figures: an overestimate for those parts.
    """
    for chip in _TABLE:
        if chip.platform == "tpu" and kind in chip.device_kinds:
            return chip
    for chip in _TABLE:
        if chip.platform == "gpu" and any(s in kind for s in chip.device_kinds):
            return chip
    return None


def peak_flops(chip: Chip, dtype: str) -> float:
    """Dense matmul peak per JAX device for a compute dtype ("bfloat16" or "float32").

    float32 follows what XLA does at JAX's default matmul precision: on TPU a float32 dot
    is one bfloat16 pass with float32 accumulation, so the bf16 peak applies; on Ampere
    and later GPUs it runs on TF32 tensor cores ("Matmul precision", JAX docs). Under
    `jax_default_matmul_precision="highest"` the real rates are several times lower.
    """
    if dtype in ("bfloat16", "bf16"):
        return chip.peak_bf16_flops
    if dtype in ("float32", "f32"):
        if chip.platform == "tpu":
            return chip.peak_bf16_flops
        if chip.peak_tf32_flops is None:
            raise ValueError(f"no TF32 peak recorded for {chip.name}")
        return chip.peak_tf32_flops
    raise ValueError(f"unknown compute dtype {dtype!r}; expected 'bfloat16' or 'float32'")


def chips_in_accelerator_type(accelerator_type: str) -> tuple[Chip, int]:
    """The chip and chip count of a Cloud TPU accelerator type: "v4-32" is 16 v4 chips,
    "v5litepod-16" 16 v5e chips."""
    prefix, _, count = accelerator_type.rpartition("-")
    name = _ACCELERATOR_PREFIXES.get(prefix, prefix)
    chip = CHIPS.get(name)
    if chip is None or chip.platform != "tpu" or not count.isdigit():
        known = sorted(n for n, c in CHIPS.items() if c.platform == "tpu")
        raise ConfigError(f"unknown accelerator type {accelerator_type!r}; expected "
                         f"'<version>-<count>' with version in {known} or 'v5litepod'")
    n = int(count)
    per = chip.cores_per_chip if chip.type_counts_cores else 1
    if n % per:
        raise ConfigError(f"{accelerator_type!r}: {n} TensorCores is not a whole number of "
                         f"{chip.name} chips ({per} cores each)")
    return chip, n // per
