"""`lmscale finetune lm`: a GPT fine-tuned on prompt/completion pairs, loss on completions.

Runs on the shared fine-tuning driver (`lmscale.train.finetune`: the same sharded step,
loop and checkpoints as pretraining). The held-out completion loss is measured before and
after, with the same evaluation code, and written to `summary.json`; the run directory
gets a copy of the tokenizer, so it loads like any checkpoint (`lmscale generate`,
`lmscale eval`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time

import jax
import ml_collections

from lmscale import storage
from lmscale.convert.pretrained import copy_tokenizer_files
from lmscale.data.loader import StepBatches, ArrayExamples
from lmscale.data.prompt_completion import (
    packed_examples, padded_examples, read_prompt_completion,
)
from lmscale.errors import ConfigError
from lmscale.models import GPT
from lmscale.models.config import check_tensor_parallel
from lmscale.models.vocab import fit_vocab
from lmscale.parallel.mesh import process_batch_rows
from lmscale.tasks.decoder import load_decoder
from lmscale.tasks.finetuning import RUNTIME_FIELDS, set_step_budget
from lmscale.train.defaults import finetune_config
from lmscale.train.finetune import FinetuneRun, finetune
from lmscale.train.loop import evaluate
from lmscale.train.objectives import CausalLMObjective
from lmscale.train.throughput import flops_per_token

log = logging.getLogger(__name__)


def lm_task_config() -> ml_collections.ConfigDict:
    t = ml_collections.ConfigDict()
    t.train_data = ""  # JSONL of {"prompt", "completion"}
    t.eval_data = ""
    t.seq_len = 128
    t.packing = False  # True: whole examples share rows, attending only within themselves
    t.max_train_examples = 0  # 0 = all
    t.max_eval_examples = 0
    t.warmup_fraction = 0.1
    return t


def lm_finetune_template(model_preset: str = "gpt2-tiny") -> ml_collections.ConfigDict:
    """Every key a prompt/completion fine-tuning config may have."""
    c = finetune_config(model_preset)
    c.task = lm_task_config()
    return c


def run_lm_finetune(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Fine-tune `init.checkpoint` on `task.train_data`; returns (and writes) the summary."""
    task = config.task
    if not config.init.checkpoint:
        raise ConfigError("set init.checkpoint to a GPT checkpoint (an lmscale pretrain run, "
                          "lmscale convert hf output, or another fine-tuning run)")
    if not task.train_data or not task.eval_data:
        raise ConfigError("set task.train_data and task.eval_data (JSONL prompt/completion)")
    runtime = {k: config.model[k] for k in RUNTIME_FIELDS}
    decoder = load_decoder(config.init.checkpoint, **runtime)
    tensor = max(config.mesh.tensor, 1)
    check_tensor_parallel(decoder.config, tensor)
    padded = decoder.config.for_tensor_parallel(tensor)
    decoder = dataclasses.replace(decoder, config=padded, params=fit_vocab(decoder.params, padded))
    if task.seq_len > decoder.config.max_len:
        raise ConfigError(f"task.seq_len ({task.seq_len}) exceeds the model's "
                          f"{decoder.config.max_len} positions")
    with config.unlocked():
        config.model.update(dataclasses.asdict(decoder.config))
    build = packed_examples if task.packing else padded_examples
    train = build(read_prompt_completion(task.train_data, task.max_train_examples),
                  decoder.tokenizer, task.seq_len)
    held_out = padded_examples(read_prompt_completion(task.eval_data, task.max_eval_examples),
                               decoder.tokenizer, task.seq_len, segments=task.packing)
    log.info("prompt/completion: %d training rows (%s), %d held-out examples, %d/%d "
             "training target tokens are completion tokens", len(train["input_ids"]),
             "packed" if task.packing else "padded", len(held_out["input_ids"]),
             int(train["loss_mask"].sum()), train["loss_mask"].size)
    set_step_budget(config, len(train["input_ids"]))
    objective = CausalLMObjective(GPT(decoder.config))
    run = FinetuneRun(objective, train, held_out, decoder.params,
                      flops_per_example=flops_per_token(decoder.config, task.seq_len)
                      * task.seq_len, tokens_per_example=task.seq_len)
    start = time.perf_counter()
    result = finetune(run, config, workdir)
    seconds = time.perf_counter() - start
    copy_tokenizer_files(decoder.tokenizer_files, storage.join(workdir, "tokenizer"))

    batches = StepBatches(ArrayExamples(held_out), config.train.batch_size, 0,
                          process_batch_rows(result.sharded.mesh, config.train.batch_size),
                          shuffle=False)
    every_batch = math.ceil(batches.num_examples / batches.global_batch_size)
    before_params = jax.device_put(decoder.params, result.sharded.state_shardings.params)
    before = evaluate(result.sharded, before_params, batches, every_batch, objective.loss_terms)
    after = evaluate(result.sharded, result.state.params, batches, every_batch,
                     objective.loss_terms)
    summary = {
        "completion_loss_before": before["eval_lm_loss"],
        "completion_loss_after": after["eval_lm_loss"],
        "completion_accuracy_before": before["eval_lm_accuracy"],
        "completion_accuracy_after": after["eval_lm_accuracy"],
        "eval_examples": batches.num_examples,
        "train_rows": len(train["input_ids"]),
        "steps": int(result.state.step),
        "stopped": result.stopped,
        "train_seconds": seconds,
    }
    storage.write_json(storage.join(workdir, "summary.json"), summary)
    return summary
