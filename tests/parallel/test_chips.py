"""The chip table: device-kind lookup, per-device figures and accelerator-type naming."""

import pytest

from lmscale.errors import ConfigError

from lmscale.parallel.chips import (
    CHIPS,
    GIB,
    chip_for_device_kind,
    chips_in_accelerator_type,
    peak_flops,
)


@pytest.mark.parametrize("kind, name", [
    ("TPU v2", "v2"), ("TPU v3", "v3"), ("TPU v4", "v4"), ("TPU v5 lite", "v5e"),
    ("TPU v5", "v5p"), ("TPU v6 lite", "v6e"), ("NVIDIA A100-SXM4-80GB", "a100"),
    ("NVIDIA H100 80GB HBM3", "h100"), ("NVIDIA H200", "h200"),
])
def test_device_kind_lookup(kind, name):
    assert chip_for_device_kind(kind) is CHIPS[name]


@pytest.mark.parametrize("kind", ["cpu", "TPU v4 lite", "TPU v7", "NVIDIA L4", "Tesla V100"])
def test_unknown_device_kind_is_none(kind):
    assert chip_for_device_kind(kind) is None


def test_v2_v3_devices_are_half_chips():
    v2, v3 = CHIPS["v2"], CHIPS["v3"]
    assert v2.devices_per_chip == v3.devices_per_chip == 2
    # Per-chip figures from the Cloud TPU pages and the TPUv2/v3 papers.
    assert v2.hbm_bytes * 2 == 16 * GIB and v3.hbm_bytes * 2 == 32 * GIB
    assert v2.peak_bf16_flops * 2 == 45e12 and v3.peak_bf16_flops * 2 == 123e12
    assert v2.hbm_bytes_per_sec * 2 == 700e9 and v3.hbm_bytes_per_sec * 2 == 900e9


def test_pinned_values():
    assert CHIPS["v4"].peak_bf16_flops == 275e12 and CHIPS["v4"].hbm_bytes == 32 * GIB
    assert CHIPS["v5e"].peak_bf16_flops == 197e12 and CHIPS["v5e"].hbm_bytes_per_sec == 819e9
    assert CHIPS["v5e"].ici_bytes_per_sec == 200e9  # 1600 Gbps
    assert CHIPS["v5p"].hbm_bytes == 95 * GIB and CHIPS["v5p"].ici_bytes_per_sec == 600e9
    assert CHIPS["v6e"].peak_bf16_flops == 918e12 and CHIPS["v6e"].ici_bytes_per_sec == 400e9
    assert CHIPS["a100"].hbm_bytes_per_sec == 2039e9 and CHIPS["a100"].peak_bf16_flops == 312e12
    assert CHIPS["h200"].hbm_bytes == 141e9 and CHIPS["h200"].ici_bytes_per_sec == 450e9


def test_peak_flops_by_dtype():
    assert peak_flops(CHIPS["v5e"], "float32") == peak_flops(CHIPS["v5e"], "bfloat16") == 197e12
    assert peak_flops(CHIPS["a100"], "float32") == 156e12
    assert peak_flops(CHIPS["h100"], "float32") == 494.7e12
    with pytest.raises(ValueError, match="bfloat16"):
        peak_flops(CHIPS["v4"], "int8")


@pytest.mark.parametrize("accelerator_type, name, chips", [
    ("v2-8", "v2", 4), ("v3-8", "v3", 4), ("v4-32", "v4", 16), ("v5p-128", "v5p", 64),
    ("v5litepod-16", "v5e", 16), ("v5e-16", "v5e", 16), ("v6e-64", "v6e", 64),
])
def test_accelerator_type_naming(accelerator_type, name, chips):
    assert chips_in_accelerator_type(accelerator_type) == (CHIPS[name], chips)


@pytest.mark.parametrize("bad", ["v4-3", "v9-8", "h100-8", "v4"])
def test_bad_accelerator_type(bad):
    with pytest.raises(ConfigError):
        chips_in_accelerator_type(bad)


def test_table_is_consistent():
    for chip in CHIPS.values():
        assert chip.peak_bf16_flops > 0 and chip.hbm_bytes > 0
        assert chip.hbm_bytes_per_sec > 0 and chip.ici_bytes_per_sec > 0 and chip.source
        if chip.platform == "tpu":
            assert chip.topology_prefix and chip.chips_per_host_bounds == (2, 2, 1)
            assert chip.chip_config_name == ("megacore" if chip.cores_per_device == 2
                                             else "default")
            assert isinstance(chip.type_counts_cores, bool) and chip.peak_tf32_flops is None
        else:
            assert chip.peak_tf32_flops and chip.topology_prefix is None
