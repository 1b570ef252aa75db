"""Can the input pipeline keep the step fed? Loader examples/s on this host against what
GPT-2 small's train step consumes on a TPU v4-8.

    python benchmarks/pretrain_throughput.py [--config configs/gpt2_small.py]
        [--accelerator v4-8] [--mfu 0.5] [--settings 0:0,2:0,2:1,2:2]

The loader side is measured here: examples shaped like the config's (batch_size rows of
data.seq_len GPT tokens; random token ids, written in the TFDS array_record format that
`lmscale pretrain` prepares and read back through `StepBatches`), at each prefetch setting
`BATCHES:WORKERS` (`train.prefetch_batches`, `train.loader_workers`). Each setting times
`--batches` step-indexed batches after the untimed ones that start its threads or worker
processes and fill its buffers.

The step side is not measured: it is the chip table's bf16 peak (`lmscale/parallel/chips.py`)
for the accelerator's chips, times an assumed MFU, applied to the config's analytic model
FLOPs per step (`pretrain_flops_per_step`, PaLM appendix B). docs/plan/ holds no v4-8 plan
to take a step time from.

The loader keeps up when it reads at least as many examples per second as the step
consumes ("x step need" >= 1). Even without prefetch, asynchronous dispatch lets the main
thread assemble batch s+1 while the device runs step s, but then that one thread must
keep up alone and any stall (an evaluation, a slow read) reaches the step; prefetch moves
assembly off the main thread with batches to spare, and worker processes multiply the
rate where one core's is not enough.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

from lmscale.cli import _load_config
from lmscale.data.loader import Prefetch, StepBatches
from lmscale.data.prepared import (
    finish_dataset, new_incomplete_dir, prepare_once, shard_file, write_examples_file,
)
from lmscale.models import ModelConfig
from lmscale.parallel.chips import chips_in_accelerator_type, peak_flops
from lmscale.train.throughput import pretrain_flops_per_step


def parse_settings(text: str) -> list[Prefetch]:
    """"0:0,2:1" -> [Prefetch(0, 0), Prefetch(2, 1)]."""
    settings = []
    for item in text.split(","):
        batches, _, workers = item.partition(":")
        settings.append(Prefetch(int(batches), int(workers or 0)))
    return settings


def synthetic_examples(root: str, num_examples: int, seq_len: int, vocab_size: int):
    """GPT examples of random tokens, written and opened as `lmscale pretrain` does (the
    writer functions of `lmscale/data/prepared.py`, one shard per split)."""
    def build(data_dir: str) -> dict:
        tokens = np.random.default_rng(0).integers(0, vocab_size, (num_examples, seq_len + 1),
                                                    dtype=np.int32)
        splits = {"train": {"input_ids": tokens[:, :-1], "targets": tokens[:, 1:],
                            "loss_mask": np.ones((num_examples, seq_len), np.float32)}}
        splits["held_out"] = {k: v[:1] for k, v in splits["train"].items()}
        features = {k: (v.shape[1:], v.dtype) for k, v in splits["train"].items()}
        folder = new_incomplete_dir(data_dir)
        lengths = {}
        for split, arrays in splits.items():
            rows = ({k: v[i] for k, v in arrays.items()} for i in range(len(arrays["targets"])))
            count, size = write_examples_file(shard_file(folder, split, 0), rows, features)
            lengths[split] = [(0, count, size)]
        finish_dataset(folder, features, lengths)
        return {}

    splits, _ = prepare_once(root, f"throughput-{num_examples}x{seq_len}", build, True,
                             lambda name: None)
    return splits["train"]


def loader_examples_per_sec(source, batch_size: int, prefetch: Prefetch,
                            batches: int) -> float:
    """Examples/s of the training loop's batch stream once it is in its steady state: the
    batches that fill the prefetch buffers while threads or workers start are read first,
    untimed, so the timed ones are each assembled while the reader waits."""
    warm_up = 1 + prefetch.batches + prefetch.workers
    stream = StepBatches(source, batch_size, seed=0, prefetch=prefetch).iterate(
        0, warm_up + batches)
    try:
        for _ in range(warm_up):
            next(stream)
        start = time.perf_counter()
        for _ in range(batches):
            next(stream)
        return batches * batch_size / (time.perf_counter() - start)
    finally:
        stream.close()


def step_examples_per_sec(model_cfg: ModelConfig, batch_size: int, seq_len: int,
                          accelerator: str, mfu: float) -> tuple[float, float]:
    """(examples/s, seconds per step) of the train step on `accelerator` at `mfu`."""
    chip, chips = chips_in_accelerator_type(accelerator)
    peak = peak_flops(chip, "bfloat16") * chip.devices_per_chip * chips
    step_seconds = pretrain_flops_per_step(model_cfg, batch_size, seq_len, 0) / (peak * mfu)
    return batch_size / step_seconds, step_seconds


def describe_setting(prefetch: Prefetch) -> str:
    if prefetch.batches == 0 and prefetch.workers == 0:
        return "in the step (no prefetch)"
    ahead = f"{prefetch.batches} ahead"
    if prefetch.workers:
        return f"{ahead}, {prefetch.workers} worker process{'es' * (prefetch.workers > 1)}"
    return f"{ahead}, threads"


def main(argv: list[str]) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/gpt2_small.py")
    parser.add_argument("--accelerator", default="v4-8")
    parser.add_argument("--mfu", type=float, default=0.5,
                        help="assumed model FLOPs utilisation of the step (default 0.5)")
    parser.add_argument("--settings", default="0:0,2:0,2:1,2:2",
                        help="prefetch settings BATCHES:WORKERS, comma-separated")
    parser.add_argument("--batches", type=int, default=12, help="timed batches per setting")
    parser.add_argument("--examples", type=int, default=1024, help="examples written")
    parser.add_argument("--workdir", default=None, help="default: a temporary directory")
    args, rest = parser.parse_known_args(argv)
    config = _load_config(args.config, [a[len("--config."):] for a in rest])
    model_cfg = ModelConfig.from_dict(config.model.to_dict())
    batch, seq_len = config.train.batch_size, config.data.seq_len
    workdir = args.workdir or tempfile.mkdtemp(prefix="lmscale-throughput-")
    source = synthetic_examples(workdir, max(args.examples, batch), seq_len,
                                model_cfg.vocab_size)
    step_rate, step_seconds = step_examples_per_sec(model_cfg, batch, seq_len,
                                                    args.accelerator, args.mfu)
    rows = []
    for prefetch in parse_settings(args.settings):
        rate = loader_examples_per_sec(source, batch, prefetch, args.batches)
        rows.append({"setting": describe_setting(prefetch), "prefetch_batches": prefetch.batches,
                     "loader_workers": prefetch.workers, "examples_per_sec": rate,
                     "tokens_per_sec": rate * seq_len, "batch_ms": 1e3 * batch / rate,
                     "step_multiple": rate / step_rate})
    print(f"{config.name or args.config}: batch {batch} x {seq_len} tokens, "
          f"{pretrain_flops_per_step(model_cfg, batch, seq_len, 0):.3g} model FLOPs per step")
    print(f"step on a {args.accelerator} (chip-table bf16 peak x assumed MFU {args.mfu:.0%}): "
          f"{step_seconds * 1e3:,.0f} ms, {step_rate:,.0f} examples/s, "
          f"{step_rate * seq_len:,.0f} tokens/s")
    print(f"loader on this host ({os.cpu_count()} CPUs; {len(source):,} examples, "
          f"{args.batches} timed batches per setting):")
    print(f"  {'setting':32}{'examples/s':>12}{'tokens/s':>14}{'ms/batch':>10}"
          f"{'x step need':>13}")
    for r in rows:
        print(f"  {r['setting']:32}{r['examples_per_sec']:>12,.0f}{r['tokens_per_sec']:>14,.0f}"
              f"{r['batch_ms']:>10,.0f}{r['step_multiple']:>13.2f}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
