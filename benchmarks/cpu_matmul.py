"""The matmuls of a GPT-2 small / BERT-Base train step at batch 4 x 128 tokens, alone:
XLA's CPU backend (what lmscale and HF Flax run on) against PyTorch's (oneDNN), float32
and bf16 inputs with float32 accumulation, each in its own process. XLA writes a float32
result, as lmscale's matmuls do; PyTorch's bf16 matmul writes bf16.

    python benchmarks/cpu_matmul.py            # needs torch: pip install -e '.[peers]'

It shows how much of the side-by-side gap (benchmarks/cpu_side_by_side.py) is the matrix
multiply itself rather than the step around it. TFLOP/s is 2·M·K·N over the best of
--repeats calls (each waited for), after two untimed ones.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

# (name, M, K, N): tokens x d_model x d_ff and back, and the GPT-2 tied head.
SHAPES = (("up 512x768x3072", 512, 768, 3072), ("down 512x3072x768", 512, 3072, 768),
          ("head 512x768x50304", 512, 768, 50304))


def _best_seconds(call, args: tuple, repeats: int) -> float:
    call(*args)
    call(*args)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call(*args)
        best = min(best, time.perf_counter() - start)
    return best


def run_jax(repeats: int) -> dict:
    import jax
    import jax.numpy as jnp

    dot = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    out = {}
    for name, m, k, n in SHAPES:
        for dtype in ("float32", "bfloat16"):
            a, b = jnp.ones((m, k), dtype), jnp.ones((k, n), dtype)
            seconds = _best_seconds(lambda a, b: dot(a, b).block_until_ready(), (a, b),
                                    repeats)
            out[f"{name} {dtype}"] = 2 * m * k * n / seconds / 1e12
    return out


def run_torch(repeats: int) -> dict:
    import torch

    out = {}
    for name, m, k, n in SHAPES:
        for dtype in ("float32", "bfloat16"):
            a = torch.ones(m, k, dtype=getattr(torch, dtype))
            b = torch.ones(k, n, dtype=getattr(torch, dtype))
            seconds = _best_seconds(torch.matmul, (a, b), repeats)  # f32 accumulation
            out[f"{name} {dtype}"] = 2 * m * k * n / seconds / 1e12
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        runner = run_jax if args.worker == "jax" else run_torch
        print(json.dumps(runner(args.repeats)))
        return 0
    results = {}
    for worker in ("jax", "torch"):
        done = subprocess.run([sys.executable, __file__, "--worker", worker,
                               "--repeats", str(args.repeats)],
                              capture_output=True, text=True)
        if done.returncode:
            print(f"{worker}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            return 1
        results[worker] = json.loads(done.stdout.strip().splitlines()[-1])
    print("| matmul (M x K x N), inputs | XLA CPU TFLOP/s | PyTorch TFLOP/s | XLA / PyTorch |")
    print("|---|---|---|---|")
    for key, xla in results["jax"].items():
        torch_rate = results["torch"][key]
        print(f"| {key} | {xla:.3f} | {torch_rate:.3f} | {xla / torch_rate:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
