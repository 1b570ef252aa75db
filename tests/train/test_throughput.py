"""MFU's denominator: the chip table's peak on a known accelerator, a dispatch-amortised
measured peak elsewhere, and `lmscale bench` using them."""

import os
import pytest

from lmscale.config import apply_overrides, load_config_file
from lmscale.parallel.chips import CHIPS, peak_flops
from lmscale.train import throughput
from lmscale.train.bench import PROFILED_STEPS, bench_train_step
from lmscale.train.profile import top_operations

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("kind, chip, dtype", [
    ("TPU v4", "v4", "bfloat16"),
    ("TPU v5 lite", "v5e", "float32"),
    ("NVIDIA H100 80GB HBM3", "h100", "bfloat16"),
    ("NVIDIA H200", "h200", "float32"),
])
def test_known_accelerators_use_the_chip_table(kind, chip, dtype):
    assert throughput.peak_flops_per_device(dtype, kind) == peak_flops(CHIPS[chip], dtype)


def test_unknown_devices_measure_a_peak():
    peak = throughput.peak_flops_per_device("float32", "cpu")
    assert 1e8 < peak < 1e14  # a real measurement: some GFLOP/s, not a table value
    assert peak not in {peak_flops(chip, "float32") for chip in CHIPS.values()}


def test_measured_peak_counts_every_chained_matmul():
    """32 matmuls in one call are timed as one call: the FLOPs of all 32 are counted, so
    the rate cannot collapse to one matmul's worth (it would be ~32x lower)."""
    one = throughput.measure_peak_flops("float32", size=256, matmuls=1, repeats=3)
    many = throughput.measure_peak_flops("float32", size=256, matmuls=32, repeats=3)
    assert many > 0.5 * one


def test_bench_mfu_uses_the_chip_table_on_an_accelerator(monkeypatch, tmp_path):
    config = load_config_file(os.path.join(ROOT, "configs", "gpt2_tiny.py"))
    apply_overrides(config, ["train.batch_size=8", "data.seq_len=32",
                             "train.grad_accum_steps=1"])
    monkeypatch.setattr(throughput, "local_device_kind", lambda: "TPU v4")
    result = bench_train_step(config, steps=2, warmup=1, profile_dir=str(tmp_path))
    devices = len(throughput.jax.local_devices())
    assert result.peak_flops_per_sec == 275e12 * devices
    assert result.mfu == pytest.approx(result.model_flops_per_sec / result.peak_flops_per_sec)
    assert result.compile_seconds > 0

    # The profiled steps' busiest operations: the matmuls lead a GPT step.
    busiest = top_operations(str(tmp_path), PROFILED_STEPS)
    assert busiest and all(ms > 0 for _, ms, _ in busiest)
    assert sum(share for _, _, share in busiest) <= 1.0 + 1e-9
    assert any("fusion" in name or "dot" in name for name, _, _ in busiest[:3])
