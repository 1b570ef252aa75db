"""What a config trains, as shapes: the objective, optimiser and global batch of each
phase, built by the same functions `lmscale pretrain` and `lmscale finetune` call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import ml_collections
import numpy as np

from lmscale.errors import ConfigError
from lmscale.models import GPT, ModelConfig
from lmscale.models.bert_heads import BertForQuestionAnswering, BertForSequenceClassification
from lmscale.tasks.objectives import ClassificationObjective, SpanObjective
from lmscale.train.bench import synthetic_batch
from lmscale.train.objectives import CausalLMObjective, objective_for
from lmscale.train.optimizer import OptimizerConfig, make_optimizer, make_schedule
from lmscale.train.pretrain import phases
from lmscale.train.throughput import encoder_flops_per_token, pretrain_flops_per_step

KINDS = ("pretrain", "squad", "classify", "lm")


@dataclass(frozen=True)
class PhaseShapes:
    seq_len: int
    steps: int  # how many of the run's steps use this phase
    batch: dict[str, jax.ShapeDtypeStruct]  # the global batch
    model_flops: float  # analytic training FLOPs of one step (whole mesh)


@dataclass(frozen=True)
class Recipe:
    kind: str
    model: ModelConfig
    objective: Any
    optimizer: Any
    schedule: Any
    seed: int
    phases: tuple[PhaseShapes, ...]


def config_kind(config: ml_collections.ConfigDict) -> str:
    """pretrain, or the fine-tuning task a config's `task` section describes."""
    if "task" not in config:
        return "pretrain"
    task = config.task
    if "doc_stride" in task:
        return "squad"
    if "label_field" in task:
        return "classify"
    return "lm"


def model_config(config: ml_collections.ConfigDict, tensor: int) -> ModelConfig:
    """The config's model with its vocabulary padded for `tensor`-way parallelism. A
    fine-tuning config's shape is its `model` section (the checkpoint is not read)."""
    return ModelConfig.from_dict(config.model.to_dict()).for_tensor_parallel(tensor)


def recipe_for(kind: str, model: ModelConfig, config: ml_collections.ConfigDict) -> Recipe:
    train = config.train
    rows = train.batch_size
    opt_cfg = OptimizerConfig(**config.optimizer.to_dict())
    steps = max(int(train.steps), 1)
    objective, shapes = _objective_and_phases(kind, model, config, rows, steps)
    return Recipe(kind, model, objective, make_optimizer(opt_cfg, steps),
                  make_schedule(opt_cfg, steps), train.seed, shapes)


def _objective_and_phases(kind, model: ModelConfig, config, rows: int, steps: int):
    if kind == "pretrain":
        result, start = [], 0
        for phase in phases(config):
            batch = _pretrain_batch(model, rows, phase.seq_len, phase.max_predictions)
            flops = pretrain_flops_per_step(model, rows, phase.seq_len, phase.max_predictions)
            result.append(PhaseShapes(phase.seq_len, phase.end_step - start, batch, flops))
            start = phase.end_step
        return objective_for(model), tuple(result)
    if kind == "lm":
        seq = config.task.seq_len
        batch = _pretrain_batch(model, rows, seq, 0)
        if config.task.packing:
            batch |= _spec(rows, seq, positions=np.int32, segment_ids=np.int32)
        flops = pretrain_flops_per_step(model, rows, seq, 0)
        return CausalLMObjective(GPT(model)), (PhaseShapes(seq, steps, batch, flops),)
    if model.family != "bert":
        raise ConfigError(f"a {kind} config fine-tunes a BERT encoder, not {model.family}")
    seq = config.task.max_seq_length
    batch = _spec(rows, seq, input_ids=np.int32, token_type_ids=np.int32,
                  attention_mask=np.int32)
    flops = float(encoder_flops_per_token(model, seq)) * rows * seq
    if kind == "squad":
        batch |= {k: jax.ShapeDtypeStruct((rows,), np.int32)
                  for k in ("start_positions", "end_positions")}
        objective = SpanObjective(BertForQuestionAnswering(model))
    else:
        batch |= {"labels": jax.ShapeDtypeStruct((rows,), np.int32)}
        labels = max(len(config.task.labels), 2)
        objective = ClassificationObjective(BertForSequenceClassification(model, labels))
    return objective, (PhaseShapes(seq, steps, batch, flops),)


def _spec(rows: int, seq: int, **dtypes) -> dict[str, jax.ShapeDtypeStruct]:
    return {k: jax.ShapeDtypeStruct((rows, seq), d) for k, d in dtypes.items()}


def _pretrain_batch(model: ModelConfig, rows: int, seq: int,
                    predictions: int) -> dict[str, jax.ShapeDtypeStruct]:
    """The keys, shapes and dtypes of a pretraining batch (those of `synthetic_batch`, which
    match the prepared examples)."""
    batch = synthetic_batch(model, rows, seq, predictions)
    return {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
