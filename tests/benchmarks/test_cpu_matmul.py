"""benchmarks/cpu_matmul.py: the XLA worker times every shape at both input dtypes."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import cpu_matmul  # noqa: E402


def test_jax_worker_rates_every_shape_and_dtype():
    rates = cpu_matmul.run_jax(repeats=1)
    assert set(rates) == {f"{name} {dtype}" for name, *_ in cpu_matmul.SHAPES
                          for dtype in ("float32", "bfloat16")}
    assert all(rate > 0 for rate in rates.values())
