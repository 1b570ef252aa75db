"""What the three train-step workers of `benchmarks/cpu_side_by_side.py` share: their
command line, the synthetic batch the Hugging Face peers train on, the timing protocol and
the one JSON line each prints. Standard library and numpy only: the Flax peer imports this
from its own virtual environment.

Timing protocol (`lmscale.train.bench.time_train_step`'s): the first step compiles and is
timed on its own; `warmup - 1` more steps run untimed; then `steps` steps are timed one by
one, each waited for, and the median is reported. While each timed step runs, the share of
the machine's CPU time that went to other processes is measured, because on a shared host
a ratio means something only when nothing else runs.

Step by step (`--interleave`, how the driver runs every worker): after the warm-up the
worker prints READY and then runs each timed step only when a line arrives on its stdin,
answering with STEP and the step's seconds. The driver keeps the workers of one shape and
dtype alive together and steps them in turn, so a host that speeds up or slows down does
so for all of them alike; while one steps, the others wait on a read and take no CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

FAMILIES = ("gpt", "bert")
DTYPES = ("float32", "bfloat16")
# BERT masks 15% of the tokens (BERT section 3.1), at most `ceil(0.15 * seq)` per row:
# 20 at sequence 128, as the BERT recipe's max_predictions_per_seq.
MASKED_LM_PROB = 0.15
READY, STEP = "@ready", "@step"  # the step-by-step protocol's lines on stdout


def default_predictions(seq: int) -> int:
    return math.ceil(MASKED_LM_PROB * seq)


def add_step_args(parser: argparse.ArgumentParser) -> None:
    """The shape, dtype and timing flags every worker takes (the driver passes them all)."""
    parser.add_argument("--family", choices=FAMILIES, required=True)
    parser.add_argument("--layers", type=int, required=True)
    parser.add_argument("--d-model", type=int, required=True)
    parser.add_argument("--heads", type=int, required=True)
    parser.add_argument("--d-ff", type=int, required=True)
    parser.add_argument("--vocab", type=int, required=True)
    parser.add_argument("--max-len", type=int, required=True, help="learned positions")
    parser.add_argument("--seq", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--predictions", type=int, default=0,
                        help="BERT: masked positions per row (default ceil(0.15 * seq))")
    parser.add_argument("--dtype", choices=DTYPES, required=True,
                        help="compute dtype; parameters and optimizer state stay float32")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (median)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed steps, the first of which compiles (>= 1)")
    parser.add_argument("--clip-norm", type=float, default=1.0,
                        help="global gradient-norm clipping (0 = none)")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--interleave", action="store_true",
                        help="after the warm-up, run each timed step when a line arrives on "
                             "stdin (see this module's docstring)")


def parse_step_args(description: str, argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    add_step_args(parser)
    args = parser.parse_args(argv)
    if args.warmup < 1:
        parser.error("--warmup must be >= 1 (the first step compiles and is never timed)")
    if args.d_model % args.heads:
        parser.error(f"--d-model {args.d_model} must be divisible by --heads {args.heads}")
    args.predictions = args.predictions or default_predictions(args.seq)
    return args


def hf_config(args: argparse.Namespace):
    """The Hugging Face config of the shape in `args` (dropout 0), for either peer: GPT-2
    and BERT configs are the same in transformers 4.57 (Flax) and 5.x (PyTorch)."""
    import transformers

    if args.family == "gpt":
        return transformers.GPT2Config(
            vocab_size=args.vocab, n_positions=args.max_len, n_embd=args.d_model,
            n_layer=args.layers, n_head=args.heads, n_inner=args.d_ff, resid_pdrop=0.0,
            embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=args.vocab - 1,
            eos_token_id=args.vocab - 1)
    return transformers.BertConfig(
        vocab_size=args.vocab, hidden_size=args.d_model, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, intermediate_size=args.d_ff,
        max_position_embeddings=args.max_len, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0)


def peer_batch(args: argparse.Namespace) -> dict[str, np.ndarray]:
    """Random tokens with the shapes of a real batch (timing does not depend on values).
    GPT: `seq` input tokens, the causal-LM labels are the same tokens (the models shift).
    BERT: `predictions` distinct masked positions per row, as 0/1 weights over all
    positions (Hugging Face's MLM head scores every position), and an NSP label."""
    rng = np.random.default_rng(args.seed)
    ids = rng.integers(0, args.vocab, (args.batch, args.seq), dtype=np.int32)
    if args.family == "gpt":
        return {"input_ids": ids}
    masked = np.zeros((args.batch, args.seq), np.float32)
    for row in masked:
        row[rng.permutation(args.seq)[:args.predictions]] = 1.0
    return {
        "input_ids": ids, "token_type_ids": np.zeros_like(ids),
        "attention_mask": np.ones_like(ids), "mlm_labels": ids, "mlm_weights": masked,
        "next_sentence_label": rng.integers(0, 2, (args.batch,), dtype=np.int32),
    }


def cpu_seconds() -> tuple[float, float]:
    """(busy CPU-seconds of the whole machine, CPU-seconds of this process and its waited-for
    children) so far. Busy = every /proc/stat state but idle and iowait; steal counts as
    busy, since it is time another tenant took."""
    with open("/proc/stat", encoding="ascii") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = map(
            int, f.readline().split()[1:9])
    busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    own = os.times()
    return busy, own.user + own.system + own.children_user + own.children_system


def time_steps(step: Callable[[], None], steps: int, warmup: int,
               interleave: bool = False) -> dict:
    """Run `step` (which must return only when the step has finished) `warmup + steps`
    times; the first is the compile, the last `steps` are timed (each on a line from stdin,
    with `interleave`)."""
    start = time.perf_counter()
    step()
    compile_seconds = time.perf_counter() - start
    for _ in range(warmup - 1):
        step()
    if interleave:
        print(READY, flush=True)
    times, busy, own = [], 0.0, 0.0
    for _ in range(steps):
        if interleave and not sys.stdin.readline():
            raise SystemExit("the driver closed stdin before the last timed step")
        (busy0, own0), start = cpu_seconds(), time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
        busy1, own1 = cpu_seconds()
        busy, own = busy + busy1 - busy0, own + own1 - own0
        if interleave:
            print(f"{STEP} {times[-1]!r}", flush=True)
    # The counters tick every 10 ms or so: on steps of a few ms the share is noise, kept
    # within [0, 1].
    others = min(1.0, max(0.0, busy - own) / (sum(times) * os.cpu_count()))
    return {"step_seconds": statistics.median(times), "step_seconds_min": min(times),
            "step_seconds_max": max(times), "step_seconds_each": times,
            "compile_seconds": compile_seconds, "others_cpu_share": others}


def emit(args: argparse.Namespace, impl: str, timing: dict, **extra) -> None:
    """Print the worker's one JSON line (the driver reads the last line of stdout)."""
    row = {"impl": impl, "family": args.family, "dtype": args.dtype, "layers": args.layers,
           "d_model": args.d_model, "heads": args.heads, "d_ff": args.d_ff,
           "vocab": args.vocab, "seq": args.seq, "batch": args.batch,
           "predictions": args.predictions if args.family == "bert" else 0,
           "steps": args.steps, "warmup": args.warmup, "clip_norm": args.clip_norm,
           **timing, "tokens_per_sec": args.batch * args.seq / timing["step_seconds"],
           "cpu_count": os.cpu_count(), **extra}
    print(json.dumps(row), flush=True)
