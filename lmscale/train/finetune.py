"""Fine-tuning on the same sharded step and loop as pretraining.

A task (SQuAD, classification, prompt/completion LM) brings its objective, its examples
and the pretrained parameters it starts from; everything else (mesh, optimiser, loop,
metrics, checkpoints, SIGTERM handling) is shared with `lmscale pretrain`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import jax
import ml_collections
import numpy as np

from lmscale import storage
from lmscale.config import to_json
from lmscale.data.loader import ArrayExamples, Prefetch, StepBatches
from lmscale.parallel.distributed import initialize_distributed
from lmscale.parallel.mesh import describe_rows, make_mesh, process_batch_rows
from lmscale.train.checkpoint import Checkpointer
from lmscale.train.loop import (
    LoopConfig, Preemption, Throughput, run_loop, use_compilation_cache,
)
from lmscale.train.metrics import MetricsWriter, plot_loss_curve
from lmscale.train.optimizer import OptimizerConfig, make_optimizer, make_schedule
from lmscale.train.state import TrainState
from lmscale.train.step import (
    ShardedStep, build_sharded_step, check_batch_split, state_shardings,
)
from lmscale.train.throughput import peak_flops_per_device

log = logging.getLogger(__name__)


@dataclass
class FinetuneRun:
    objective: Any  # see lmscale/train/objectives.py for the protocol
    train_examples: dict[str, np.ndarray]
    eval_examples: dict[str, np.ndarray] | None
    pretrained: Any | None  # a params tree; its leaves replace the fresh ones at equal paths
    flops_per_example: float = 0.0  # training FLOPs per example, for MFU (0 = not reported)
    tokens_per_example: int = 0


@dataclass
class FinetuneResult:
    state: TrainState
    sharded: ShardedStep
    stopped: str  # "done" or "preempted"
    new_params: list[str]  # parameters not found in the pretrained tree (freshly initialised)


def merge_pretrained(fresh: Any, pretrained: Any) -> tuple[Any, list[str]]:
    """Fresh parameters with every leaf that `pretrained` has at the same path replaced.

    Returns the merged tree and the paths that kept their fresh initialisation (new heads).
    Shapes must agree where paths do.
    """
    given = {jax.tree_util.keystr(p): v
             for p, v in jax.tree_util.tree_flatten_with_path(pretrained)[0]}
    kept = []

    def pick(path, leaf):
        name = jax.tree_util.keystr(path)
        if name not in given:
            kept.append(name)
            return leaf
        value = given[name]
        if tuple(np.shape(value)) != tuple(leaf.shape):
            from lmscale.train.checkpoint import CheckpointError

            raise CheckpointError(f"pretrained {name} has shape {tuple(np.shape(value))} but "
                                  f"the model expects {tuple(leaf.shape)}")
        return np.asarray(value, leaf.dtype)

    merged = jax.tree_util.tree_map_with_path(pick, fresh)
    return merged, kept


def finetune(run: FinetuneRun, config: ml_collections.ConfigDict, workdir: str) -> FinetuneResult:
    """Train `run.objective` from `run.pretrained`; `config` has train/optimizer/mesh/distributed
    sections as in `lmscale.train.defaults`."""
    initialize_distributed(config.distributed)
    use_compilation_cache(config.train.compilation_cache_dir)
    is_main = jax.process_index() == 0
    train_cfg = config.train
    mesh = make_mesh(config.mesh.to_dict())
    check_batch_split(train_cfg.batch_size, train_cfg.grad_accum_steps, mesh)
    if is_main:
        storage.write_text(storage.join(workdir, "config.json"), to_json(config))
    opt_cfg = OptimizerConfig(**config.optimizer.to_dict())
    optimizer = make_optimizer(opt_cfg, train_cfg.steps)
    schedule = make_schedule(opt_cfg, train_cfg.steps)
    example_batch = {k: v[: train_cfg.batch_size] for k, v in run.train_examples.items()}
    sharded = build_sharded_step(run.objective, optimizer, schedule, mesh, example_batch,
                                 train_cfg.grad_accum_steps, train_cfg.seed)
    checkpointer = Checkpointer(storage.join(workdir, "checkpoints"),
                                train_cfg.keep_checkpoints, train_cfg.keep_every)
    abstract, shardings = state_shardings(run.objective, optimizer, example_batch, mesh)
    state = checkpointer.restore(abstract, shardings)
    new_params: list[str] = []
    if state is None:
        state = sharded.init(jax.random.key(train_cfg.seed))
        if run.pretrained is not None:
            # Fresh leaves stay where they are: `jax.device_get` cannot read parameters
            # sharded across hosts, and `device_put` passes placed arrays through.
            merged, new_params = merge_pretrained(state.params, run.pretrained)
            params = jax.device_put(merged, shardings.params)
            state = TrainState(step=state.step, params=params,
                               opt_state=sharded_opt_init(optimizer, params, shardings))
            if new_params and is_main:
                log.info("initialised %d parameters absent from the pretrained checkpoint: %s",
                         len(new_params), ", ".join(new_params))
    else:
        log.info("resuming fine-tuning from step %d", int(state.step))

    rows = process_batch_rows(mesh, train_cfg.batch_size)
    log.info("process %d of %d reads rows %s of every global batch (%d of %d)",
             jax.process_index(), jax.process_count(), describe_rows(rows), len(rows),
             train_cfg.batch_size)
    train_batches = StepBatches(ArrayExamples(run.train_examples), train_cfg.batch_size,
                                train_cfg.seed, rows,
                                prefetch=Prefetch(train_cfg.prefetch_batches,
                                                  train_cfg.loader_workers))
    eval_batches = None
    if run.eval_examples is not None:
        eval_batches = StepBatches(ArrayExamples(run.eval_examples), train_cfg.batch_size, 0,
                                   rows, shuffle=False)
    peak = (train_cfg.peak_flops or peak_flops_per_device(config.model.compute_dtype)) * mesh.size
    throughput = Throughput(run.tokens_per_example * train_cfg.batch_size,
                            run.flops_per_example * train_cfg.batch_size, peak)
    writer = MetricsWriter(workdir, enabled=is_main)
    writer.resume_at(int(state.step))
    config_dict = config.to_dict()
    try:
        with Preemption() as preemption:
            state, stopped = run_loop(
                sharded, state, train_batches, eval_batches,
                LoopConfig(train_cfg.steps, train_cfg.log_every, train_cfg.eval_every,
                           train_cfg.eval_batches, train_cfg.checkpoint_every,
                           tuple(train_cfg.profile_steps), storage.join(workdir, "profile")),
                run.objective.loss_terms, writer, throughput, is_main,
                save_checkpoint=lambda s, force: checkpointer.save(s, config_dict, force),
                preemption=preemption)
        checkpointer.wait()
    finally:
        checkpointer.close()
    writer.close()
    if is_main:
        plot_loss_curve(writer.path, storage.join(workdir, "loss.png"))
    return FinetuneResult(state, sharded, stopped, new_params)


def sharded_opt_init(optimizer, params, shardings: TrainState):
    """Optimizer state for `params`, laid out like the train state's."""
    return jax.jit(optimizer.init, out_shardings=shardings.opt_state)(params)
