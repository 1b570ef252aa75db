"""benchmarks/cpu_attention.py: the JAX worker times both implementations of both kinds."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import cpu_attention  # noqa: E402


def test_jax_worker_times_every_kind_and_implementation():
    seconds = cpu_attention.run_jax([16], repeats=1)
    assert set(seconds) == {f"{kind} 16 {impl}" for kind, _ in cpu_attention.KINDS
                            for impl in ("jax", "lmscale")}
    assert all(s > 0 for s in seconds.values())
