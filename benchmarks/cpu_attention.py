"""Attention alone, forward and backward, at the side-by-side's shapes (12 heads of 64,
batch 4, bf16 inputs): JAX's `jax.nn.dot_product_attention(implementation="xla")`,
lmscale's XLA attention (`lmscale.models.attention.softmax_attention`, what the train
step runs on a CPU) and PyTorch's `scaled_dot_product_attention` (a fused flash kernel on
CPU), each library in its own process.

    python benchmarks/cpu_attention.py              # needs torch: pip install -e '.[peers]'
    python benchmarks/cpu_attention.py --lengths 128

It shows how much of the side-by-side's gap at sequence 512
(benchmarks/cpu_side_by_side.py) is attention. Each cell is the best of --repeats calls
(each waited for) of one jitted function returning the output and the gradients of q, k
and v against a fixed cotangent, after two untimed calls; the two JAX implementations are
timed alternately in one process.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import time

BATCH, HEADS, HEAD_DIM = 4, 12, 64
# (name, causal): GPT-2's attention and BERT's (a padding mask with every key real).
KINDS = (("GPT-2 causal", True), ("BERT with key mask", False))


def _best_seconds(call, repeats: int) -> float:
    call()
    call()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def run_jax(lengths: list[int], repeats: int) -> dict:
    import jax
    import jax.numpy as jnp

    from lmscale.models.attention import softmax_attention

    def jax_xla(q, k, v, mask, causal):
        return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal,
                                            implementation="xla")

    def timed_call(attention, inputs, mask, causal):
        def forward_backward(q, k, v, d_out):
            out, pull = jax.vjp(lambda q, k, v: attention(q, k, v, mask, causal), q, k, v)
            return out, pull(d_out)
        step = jax.jit(forward_backward)
        return lambda: jax.block_until_ready(step(*inputs))

    out = {}
    for length in lengths:
        keys = jax.random.split(jax.random.key(0), 4)
        inputs = [jax.random.normal(key, (BATCH, length, HEADS, HEAD_DIM), jnp.bfloat16)
                  for key in keys]
        for kind, causal in KINDS:
            mask = None if causal else jnp.ones((BATCH, 1, 1, length), bool)
            calls = {"jax": timed_call(jax_xla, inputs, mask, causal),
                     "lmscale": timed_call(softmax_attention, inputs, mask, causal)}
            for call in calls.values():
                call()
                call()
            best = {impl: float("inf") for impl in calls}
            for _ in range(repeats):  # alternate, so that a drifting host slows both alike
                for impl, call in calls.items():
                    start = time.perf_counter()
                    call()
                    best[impl] = min(best[impl], time.perf_counter() - start)
            for impl, seconds in best.items():
                out[f"{kind} {length} {impl}"] = seconds
    return out


def run_torch(lengths: list[int], repeats: int) -> dict:
    import torch

    def forward_backward(q, k, v, d_out, mask, causal):
        inputs = [x.detach().requires_grad_() for x in (q, k, v)]
        y = torch.nn.functional.scaled_dot_product_attention(*inputs, attn_mask=mask,
                                                             is_causal=causal)
        y.backward(d_out)

    out = {}
    for length in lengths:
        tensors = [torch.randn(BATCH, HEADS, length, HEAD_DIM, dtype=torch.bfloat16)
                   for _ in range(4)]
        for kind, causal in KINDS:
            mask = None if causal else torch.ones(BATCH, 1, 1, length, dtype=torch.bool)
            out[f"{kind} {length} torch"] = _best_seconds(
                functools.partial(forward_backward, *tensors, mask, causal), repeats)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="128,512", help="comma-separated")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    lengths = [int(n) for n in args.lengths.split(",")]
    if args.worker:
        runner = run_jax if args.worker == "jax" else run_torch
        print(json.dumps(runner(lengths, args.repeats)))
        return 0
    results = {}
    for worker in ("jax", "torch"):
        done = subprocess.run([sys.executable, __file__, "--worker", worker, "--lengths",
                               args.lengths, "--repeats", str(args.repeats)],
                              capture_output=True, text=True)
        if done.returncode:
            print(f"{worker}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            return 1
        results |= json.loads(done.stdout.strip().splitlines()[-1])
    print("| attention, fwd + bwd, bf16 | jax.nn.dot_product_attention (XLA) ms | "
          "lmscale ms | PyTorch SDPA ms | lmscale vs JAX / PyTorch |")
    print("|---|---|---|---|---|")
    for length in lengths:
        for kind, _ in KINDS:
            jax_s, ours, torch_s = (results[f"{kind} {length} {impl}"]
                                    for impl in ("jax", "lmscale", "torch"))
            print(f"| {kind}, {BATCH} x {length} | {jax_s * 1e3:.1f} | {ours * 1e3:.1f} | "
                  f"{torch_s * 1e3:.1f} | {jax_s / ours:.2f}x / {torch_s / ours:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
