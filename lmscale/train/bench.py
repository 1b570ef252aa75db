"""Time the compiled train step: tokens/s, step time and MFU for a config on this host."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import jax
import ml_collections
import numpy as np

from lmscale.models import ModelConfig
from lmscale.parallel.mesh import make_mesh
from lmscale.train.optimizer import OptimizerConfig, make_optimizer, make_schedule
from lmscale.train.objectives import objective_for
from lmscale.train.step import build_sharded_step, check_batch_split, model_for_mesh
from lmscale.train import throughput


PROFILED_STEPS = 3


@dataclass(frozen=True)
class BenchResult:
    step_seconds: float  # median
    tokens_per_sec: float
    examples_per_sec: float
    model_flops_per_sec: float
    peak_flops_per_sec: float  # whole mesh
    mfu: float
    compile_seconds: float


def synthetic_batch(model_cfg: ModelConfig, batch_size: int, seq_len: int,
                    max_predictions: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random tokens with the shapes of a real batch (timing does not depend on values)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, model_cfg.vocab_size, (batch_size, seq_len + 1), dtype=np.int32)
    if model_cfg.family == "gpt":
        return {"input_ids": ids[:, :-1], "targets": ids[:, 1:],
                "loss_mask": np.ones((batch_size, seq_len), np.float32)}
    return {
        "input_ids": ids[:, :-1], "token_type_ids": np.zeros((batch_size, seq_len), np.int32),
        "attention_mask": np.ones((batch_size, seq_len), np.int32),
        "masked_lm_positions": rng.integers(0, seq_len, (batch_size, max_predictions),
                                            dtype=np.int32),
        "masked_lm_ids": ids[:, :max_predictions],
        "masked_lm_weights": np.ones((batch_size, max_predictions), np.float32),
        "next_sentence_label": rng.integers(0, 2, (batch_size,), dtype=np.int32),
    }


def synthetic_span_batch(model_cfg: ModelConfig, batch_size: int, seq_len: int,
                         seed: int = 0) -> dict[str, np.ndarray]:
    """Random SQuAD features (`[CLS] question [SEP] context [SEP]`, no padding): the shapes
    `lmscale finetune squad` trains on, at its costliest (every position a real token)."""
    rng = np.random.default_rng(seed)
    return {
        "input_ids": rng.integers(0, model_cfg.vocab_size, (batch_size, seq_len),
                                  dtype=np.int32),
        "token_type_ids": np.zeros((batch_size, seq_len), np.int32),
        "attention_mask": np.ones((batch_size, seq_len), np.int32),
        "start_positions": rng.integers(0, seq_len, (batch_size,), dtype=np.int32),
        "end_positions": rng.integers(0, seq_len, (batch_size,), dtype=np.int32),
    }


def time_train_step(objective, optimizer, schedule, mesh, batch: dict[str, np.ndarray],
                    grad_accum_steps: int, flops_per_step: float, peak_flops_per_device: float,
                    steps: int = 10, warmup: int = 2, profile_dir: str = "") -> BenchResult:
    """Compile the sharded train step for `batch`, then time `steps` steps after `warmup`
    (the first of which compiles); `flops_per_step` are the model FLOPs of one step. With
    `profile_dir`, PROFILED_STEPS more steps are traced into it afterwards."""
    sharded = build_sharded_step(objective, optimizer, schedule, mesh, batch, grad_accum_steps)
    state = sharded.init(jax.random.key(0))
    global_batch = sharded.global_batch(batch)
    start = time.perf_counter()
    state, metrics = sharded.train(state, global_batch)
    jax.block_until_ready(metrics)
    compile_seconds = time.perf_counter() - start
    for _ in range(warmup - 1):
        state, metrics = sharded.train(state, global_batch)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = sharded.train(state, global_batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    step_seconds = statistics.median(times)
    if profile_dir:
        jax.profiler.start_trace(profile_dir)
        for _ in range(PROFILED_STEPS):
            state, metrics = sharded.train(state, global_batch)
        jax.block_until_ready(metrics)
        jax.profiler.stop_trace()
    rows, length = batch["input_ids"].shape
    peak = peak_flops_per_device * mesh.size
    model_flops = flops_per_step / step_seconds
    return BenchResult(step_seconds, rows * length / step_seconds, rows / step_seconds,
                       model_flops, peak, model_flops / peak, compile_seconds)


def bench_train_step(config: ml_collections.ConfigDict, steps: int = 10, warmup: int = 2,
                     peak_flops_per_device: float = 0.0, profile_dir: str = "") -> BenchResult:
    """`time_train_step` for a pretraining config on synthetic batches of its shapes;
    the peak is the chip table's (or measured) unless `peak_flops_per_device` is given."""
    model_cfg = ModelConfig.from_dict(config.model.to_dict())
    opt_cfg = OptimizerConfig(**config.optimizer.to_dict())
    batch_size, seq_len = config.train.batch_size, config.data.seq_len
    predictions = config.data.max_predictions_per_seq
    mesh = make_mesh(config.mesh.to_dict())
    check_batch_split(batch_size, config.train.grad_accum_steps, mesh)
    model_cfg = model_for_mesh(model_cfg, mesh)
    batch = synthetic_batch(model_cfg, batch_size, seq_len, predictions)
    flops = throughput.pretrain_flops_per_step(model_cfg, batch_size, seq_len, predictions)
    peak = peak_flops_per_device or throughput.peak_flops_per_device(model_cfg.compute_dtype)
    return time_train_step(objective_for(model_cfg), make_optimizer(opt_cfg, 1000),
                           make_schedule(opt_cfg, 1000), mesh, batch,
                           config.train.grad_accum_steps, flops, peak, steps, warmup,
                           profile_dir)
