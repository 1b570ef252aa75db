"""Can the input pipeline keep the step fed? Loader examples/s alone vs the compiled step.

    python benchmarks/pretrain_throughput.py --config configs/gpt2_tiny.py [--config.KEY=VALUE ...]

Prepares the config's examples (TFDS array_record, as `lmscale pretrain` does), then times
(1) reading step-indexed batches through Grain with nothing else running and (2) the
compiled train step (`lmscale bench`), and prints both with tokens/s and MFU.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import jax

from lmscale.cli import _load_config
from lmscale.data.loader import StepBatches
from lmscale.data.pretrain import prepare_pretraining_data
from lmscale.models import ModelConfig
from lmscale.train.bench import bench_train_step


def loader_examples_per_sec(source, batch_size: int, batches: int) -> float:
    loader = StepBatches(source, batch_size, seed=0)
    loader[0]  # open files, build the permutation
    start = time.perf_counter()
    for step in range(1, batches + 1):
        loader[step]
    return batches * batch_size / (time.perf_counter() - start)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--workdir", default=None, help="default: a temporary directory")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10)
    args, rest = parser.parse_known_args(argv)
    config = _load_config(args.config, [a[len("--config."):] for a in rest])
    workdir = args.workdir or tempfile.mkdtemp(prefix="lmscale-throughput-")
    model_cfg = ModelConfig.from_dict(config.model.to_dict())
    data = prepare_pretraining_data(config.data, model_cfg, workdir, config.data.seq_len,
                                    config.data.max_predictions_per_seq)
    batch, seq_len = config.train.batch_size, config.data.seq_len
    loader = loader_examples_per_sec(data.train, batch, args.batches)
    step = bench_train_step(config, steps=args.steps,
                            peak_flops_per_device=config.train.peak_flops)
    print(f"{config.name}: batch {batch} x {seq_len} tokens on {jax.device_count()} "
          f"{jax.devices()[0].platform} device(s); data in {os.path.join(workdir, 'data')}")
    print(f"{'':24}{'examples/s':>12}{'tokens/s':>14}{'MFU':>8}")
    print(f"{'loader (Grain, 1 proc)':24}{loader:>12,.0f}{loader * seq_len:>14,.0f}{'':>8}")
    print(f"{'train step':24}{step.examples_per_sec:>12,.1f}{step.tokens_per_sec:>14,.0f}"
          f"{step.mfu:>8.1%}")
    print(f"the loader reads {loader / step.examples_per_sec:,.0f}x faster than the step consumes")


if __name__ == "__main__":
    main(sys.argv[1:])
