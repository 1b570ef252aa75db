"""What every fine-tuning task shares, encoder or decoder: the model fields a task may
change on a pretrained checkpoint, the step budget from epochs, and its result files."""

from __future__ import annotations

import math

import ml_collections

from lmscale.errors import ConfigError

# Fields a fine-tuning config may change on a pretrained model; the shape is the checkpoint's.
RUNTIME_FIELDS = ("compute_dtype", "remat_policy", "attention_impl", "dropout",
                  "attention_dropout", "loss_chunk")


def set_step_budget(config: ml_collections.ConfigDict, num_train_examples: int) -> None:
    """`train.steps` from `train.epochs` (when > 0) and warmup as `task.warmup_fraction` of
    the steps (BERT's fine-tuning recipe: 10% linear warmup, then linear decay)."""
    train = config.train
    if train.epochs > 0:
        train.steps = max(1, math.ceil(train.epochs * num_train_examples / train.batch_size))
    if train.steps <= 0:
        raise ConfigError("train.steps must be positive (or set train.epochs)")
    if config.task.warmup_fraction > 0:
        config.optimizer.warmup_steps = round(config.task.warmup_fraction * train.steps)
