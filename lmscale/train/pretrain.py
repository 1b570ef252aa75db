"""`lmscale pretrain`: everything a pretraining run needs, assembled from the config."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import ml_collections

from lmscale import storage
from lmscale.config import to_json
from lmscale.data.loader import Prefetch, StepBatches, stack_examples
from lmscale.data.mixture import MixtureStepBatches
from lmscale.data.pretrain import PretrainingData, prepare_pretraining_data
from lmscale.errors import ConfigError
from lmscale.models import ModelConfig
from lmscale.parallel.distributed import barrier, initialize_distributed
from lmscale.parallel.mesh import (
    describe_rows, fetch_to_hosts, make_mesh, process_batch_rows,
)
from lmscale.train.checkpoint import Checkpointer
from lmscale.train.loop import (
    LoopConfig, Preemption, Throughput, evaluate, run_loop, use_compilation_cache,
)
from lmscale.train.metrics import MetricsWriter, plot_loss_curve
from lmscale.train.objectives import objective_for
from lmscale.train.optimizer import OptimizerConfig, make_optimizer, make_schedule
from lmscale.train.step import (
    build_sharded_step, check_batch_split, model_for_mesh, state_shardings,
)
from lmscale.train.throughput import peak_flops_per_device, pretrain_flops_per_step

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Phase:
    end_step: int
    seq_len: int
    max_predictions: int


def phases(config: ml_collections.ConfigDict) -> list[Phase]:
    """Sequence-length phases (BERT: 90% of steps at 128, then 512)."""
    steps = config.train.steps
    if not config.data.phases:
        return [Phase(steps, config.data.seq_len, config.data.max_predictions_per_seq)]
    result = []
    for entry in config.data.phases:
        if len(entry) != 3:
            raise ConfigError("data.phases entries are (fraction_of_steps, seq_len, "
                              f"max_predictions_per_seq), got {entry}")
        fraction, seq_len, max_predictions = entry
        result.append(Phase(round(fraction * steps), int(seq_len), int(max_predictions)))
    if result[-1].end_step != steps:
        raise ConfigError("the last of data.phases must end at fraction 1.0")
    return result


def prepare_phases(data_cfg, model_cfg: ModelConfig, workdir: str, run_phases: list[Phase],
                   is_main: bool) -> list[PretrainingData]:
    """Every phase's examples, prepared (or found prepared) before step 0: a run never
    stops between phases to build data, and a problem with any phase's data (a sequence
    length the model cannot take, a corpus too small) surfaces before training starts."""
    return [prepare_pretraining_data(data_cfg, model_cfg, workdir, phase.seq_len,
                                     phase.max_predictions, is_main, barrier)
            for phase in run_phases]


def describe_phase_data(phase: Phase, data: PretrainingData) -> str:
    return (f"length {phase.seq_len}: {len(data.train):,} training and "
            f"{len(data.held_out):,} held-out examples; unigram baseline "
            f"{data.unigram_loss:.3f}")


def prepare_data(config: ml_collections.ConfigDict, workdir: str) -> list[str]:
    """Train the tokenizer and write every phase's examples ahead of training; returns a
    line per phase saying what is there."""
    initialize_distributed(config.distributed)
    model_cfg = ModelConfig.from_dict(config.model.to_dict())
    run_phases = phases(config)
    phase_data = prepare_phases(config.data, model_cfg, workdir, run_phases,
                                jax.process_index() == 0)
    return [describe_phase_data(p, d) for p, d in zip(run_phases, phase_data)]


def train_batches_of(data: PretrainingData, batch_size: int, seed: int, rows,
                     prefetch: Prefetch) -> StepBatches | MixtureStepBatches:
    """Step-indexed training batches: the one corpus, or its weighted mixture's parts."""
    if not data.mixture:
        return StepBatches(data.train, batch_size, seed, rows, prefetch=prefetch)
    return MixtureStepBatches([p.train for p in data.mixture], [p.weight for p in data.mixture],
                              batch_size, seed, rows, prefetch=prefetch,
                              names=[p.source for p in data.mixture])


# (model, host parameters, prepared data, count) -> lines shown at the end of a run.
ShowSamples = Callable[[Any, Any, Any, int], list[str]]


def pretrain(config: ml_collections.ConfigDict, workdir: str,
             show_samples: ShowSamples | None = None) -> dict:
    """Train (or resume) the configured model; returns a summary of the run. With
    `show_samples` (`lmscale.tasks.samples.end_of_run_samples`), `train.samples` lines of
    it close the summary."""
    initialize_distributed(config.distributed)
    use_compilation_cache(config.train.compilation_cache_dir)
    is_main = jax.process_index() == 0
    model_cfg = ModelConfig.from_dict(config.model.to_dict())
    opt_cfg = OptimizerConfig(**config.optimizer.to_dict())
    train_cfg = config.train
    if train_cfg.steps <= 0:
        raise ConfigError("train.steps must be positive")
    mesh = make_mesh(config.mesh.to_dict())
    check_batch_split(train_cfg.batch_size, train_cfg.grad_accum_steps, mesh)
    model_cfg = model_for_mesh(model_cfg, mesh)
    run_phases = phases(config)
    # Data problems (missing or empty corpus, vocabulary mismatch) surface here, for every
    # phase, before anything that looks like a run is written.
    phase_data = prepare_phases(config.data, model_cfg, workdir, run_phases, is_main)
    if is_main:
        for phase, data in zip(run_phases, phase_data):
            log.info("data for steps to %d: %s", phase.end_step, describe_phase_data(phase, data))
        storage.write_text(storage.join(workdir, "config.json"), to_json(config))
    with Preemption() as preemption:
        return _train_phases(config, workdir, model_cfg, opt_cfg, mesh, run_phases, phase_data,
                             preemption, is_main, show_samples)


def _train_phases(config, workdir: str, model_cfg: ModelConfig, opt_cfg: OptimizerConfig, mesh,
                  run_phases: list[Phase], phase_data: list[PretrainingData],
                  preemption: Preemption, is_main: bool,
                  show_samples: ShowSamples | None) -> dict:
    train_cfg = config.train
    objective = objective_for(model_cfg)
    optimizer = make_optimizer(opt_cfg, train_cfg.steps)
    schedule = make_schedule(opt_cfg, train_cfg.steps)
    writer = MetricsWriter(workdir, enabled=is_main)
    checkpointer = Checkpointer(storage.join(workdir, "checkpoints"),
                                train_cfg.keep_checkpoints, train_cfg.keep_every)
    config_dict = config.to_dict()
    peak = (train_cfg.peak_flops or peak_flops_per_device(model_cfg.compute_dtype)) * mesh.size
    try:
        state, stopped = None, "done"
        prefetch = Prefetch(train_cfg.prefetch_batches, train_cfg.loader_workers)
        for phase, data in zip(run_phases, phase_data):
            example_batch = stack_examples(data.train, train_cfg.batch_size)
            sharded = build_sharded_step(objective, optimizer, schedule, mesh, example_batch,
                                         train_cfg.grad_accum_steps, train_cfg.seed)
            if state is None:
                abstract, shardings = state_shardings(objective, optimizer, example_batch, mesh)
                state = checkpointer.restore(abstract, shardings,
                                             vocab_size=model_cfg.vocab_size)
                if state is None:
                    state = sharded.init(jax.random.key(train_cfg.seed))
                else:
                    log.info("resuming from step %d", int(state.step))
                writer.resume_at(int(state.step))
            rows = process_batch_rows(mesh, train_cfg.batch_size)
            train_batches = train_batches_of(data, train_cfg.batch_size, train_cfg.seed, rows,
                                             prefetch)
            # Held-out examples are stored shard after shard: a fixed permutation (seed 0)
            # makes the first train.eval_batches span the corpus, the same at every eval.
            eval_batches = StepBatches(data.held_out, train_cfg.batch_size, 0, rows)
            if int(state.step) >= phase.end_step:
                continue
            log.info("process %d of %d reads rows %s of every global batch (%d of %d)",
                     jax.process_index(), jax.process_count(), describe_rows(rows), len(rows),
                     train_cfg.batch_size)
            if is_main:
                log.info("phase to step %d: %d training / %d held-out examples of length %d "
                         "(%.1f epochs); unigram baseline loss %.3f", phase.end_step,
                         train_batches.num_examples, eval_batches.num_examples, phase.seq_len,
                         train_batches.epochs(phase.end_step - int(state.step)),
                         data.unigram_loss)
                if data.mixture:
                    for line in train_batches.describe(int(state.step), phase.end_step):
                        log.info("mixture: %s", line)
            tokens = train_cfg.batch_size * phase.seq_len
            throughput = Throughput(tokens, pretrain_flops_per_step(
                model_cfg, train_cfg.batch_size, phase.seq_len, phase.max_predictions), peak)
            loop = LoopConfig(phase.end_step, train_cfg.log_every, train_cfg.eval_every,
                              train_cfg.eval_batches, train_cfg.checkpoint_every,
                              tuple(train_cfg.profile_steps), storage.join(workdir, "profile"))
            state, stopped = run_loop(
                sharded, state, train_batches, eval_batches, loop, objective.loss_terms, writer,
                throughput, is_main,
                save_checkpoint=lambda s, force: checkpointer.save(s, config_dict, force),
                preemption=preemption)
            if stopped == "preempted":
                break
        checkpointer.wait()
    finally:
        # Waits for an asynchronous save in flight, also when training stopped on an error.
        checkpointer.close()
    final_eval = evaluate(sharded, state.params, eval_batches, train_cfg.eval_batches,
                          objective.loss_terms)
    writer.write(int(state.step), final_eval)
    writer.close()
    summary = {"step": int(state.step), "stopped": stopped, "unigram_loss": data.unigram_loss,
               **final_eval}
    if data.mixture:
        summary["mixture"] = [dataclasses.asdict(epoch) for epoch in
                              train_batches.realised_mixture(0, int(state.step))]
    samples = []
    if show_samples is not None and train_cfg.samples > 0:
        # Every process takes part: gathering parameters sharded across hosts is a collective.
        params = fetch_to_hosts(state.params)
        if is_main:
            samples = show_samples(objective.model, params, data, train_cfg.samples)
    if is_main:
        plot_loss_curve(writer.path, storage.join(workdir, "loss.png"), data.unigram_loss)
        summary["samples"] = samples
        storage.write_json(storage.join(workdir, "summary.json"), summary)
    return summary
