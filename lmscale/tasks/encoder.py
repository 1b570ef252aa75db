"""What every BERT fine-tuning task shares: the starting encoder, the step budget from
epochs, training on the shared driver, and batched prediction under the mesh."""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from lmscale import storage
from lmscale.convert.pretrained import (
    check_vocab_sizes, copy_tokenizer_files, load_pretrained, tokenizer_files_in,
)
from lmscale.data.load_tokenizer import load_tokenizer
from lmscale.data.tokenizer import Tokenizer
from lmscale.errors import ConfigError
from lmscale.models.config import ModelConfig, check_tensor_parallel
from lmscale.parallel.mesh import batch_sharding, data_parallel_size, mesh_context, replicated
from lmscale.tasks.finetuning import RUNTIME_FIELDS
from lmscale.tasks.objectives import encoder_inputs
from lmscale.train.finetune import FinetuneResult, FinetuneRun, finetune
from lmscale.train.metrics import read_metrics
from lmscale.train.throughput import encoder_flops_per_token

@dataclass(frozen=True)
class Encoder:
    config: ModelConfig
    params: dict | None  # pretrained tree {"params": {"bert": ...}}; None = from scratch
    tokenizer: Tokenizer
    tokenizer_files: list[str]  # copied into the run directory, so it exports like a pretrain run


def load_encoder(config: ml_collections.ConfigDict) -> Encoder:
    """The encoder named by `init.checkpoint`, or a fresh one of `model`'s shape with the
    tokenizer `task.tokenizer`. `config.model` is updated to the shape actually used, so the
    resolved config in the run directory tells the truth."""
    tensor = max(config.mesh.tensor, 1)
    if config.init.checkpoint:
        pretrained = load_pretrained(config.init.checkpoint, tensor=tensor)
        runtime = {k: config.model[k] for k in RUNTIME_FIELDS}
        model_cfg = dataclasses.replace(pretrained.config, **runtime)
        encoder = Encoder(model_cfg, pretrained.params, pretrained.tokenizer,
                          pretrained.tokenizer_files)
    else:
        if not config.task.tokenizer:
            raise ConfigError("set init.checkpoint to a pretrained model (lmscale convert hf "
                              "output, an lmscale pretrain run) or task.tokenizer to train "
                              "from scratch")
        tokenizer = load_tokenizer(config.task.tokenizer)
        model_cfg = ModelConfig.from_dict(config.model.to_dict()).for_tensor_parallel(tensor)
        check_vocab_sizes(model_cfg, tokenizer, config.task.tokenizer)
        files = (tokenizer_files_in(config.task.tokenizer)
                 if storage.isdir(config.task.tokenizer) else [config.task.tokenizer])
        encoder = Encoder(model_cfg, None, tokenizer, files)
    check_tensor_parallel(encoder.config, tensor)
    if encoder.config.family != "bert":
        raise ConfigError(f"{config.init.checkpoint!r} holds a {encoder.config.family} model; "
                          "this task fine-tunes BERT encoders")
    with config.unlocked():
        config.model.update(dataclasses.asdict(encoder.config))
    return encoder


@dataclass(frozen=True)
class Trained:
    result: FinetuneResult
    train_seconds: float  # wall time of the whole fine-tuning call (compile included)


def train_encoder(objective, train: dict[str, np.ndarray], held_out: dict[str, np.ndarray] | None,
                  encoder: Encoder, config: ml_collections.ConfigDict, workdir: str) -> Trained:
    """Fine-tune on the shared sharded step and loop (`lmscale.train.finetune`)."""
    seq_len = train["input_ids"].shape[1]
    if seq_len > encoder.config.max_len:
        raise ConfigError(f"sequence length {seq_len} exceeds the model's {encoder.config.max_len} "
                          "positions; lower task.max_seq_length")
    run = FinetuneRun(objective, train, held_out, encoder.params,
                      flops_per_example=encoder_flops_per_token(encoder.config, seq_len) * seq_len,
                      tokens_per_example=seq_len)
    start = time.perf_counter()
    result = finetune(run, config, workdir)
    seconds = time.perf_counter() - start
    if jax.process_index() == 0:
        copy_tokenizer_files(encoder.tokenizer_files, storage.join(workdir, "tokenizer"))
    return Trained(result, seconds)


def predict(model: nn.Module, result: FinetuneResult, params, arrays: dict[str, np.ndarray],
            batch_size: int):
    """`model` applied to every row of `arrays` (encoder inputs), batched and sharded over
    the fine-tuning mesh; returns the outputs' tree with numpy leaves, one row per input.

    Every process holds all rows; each device receives its slice of each batch, and the
    last batch is filled with copies of the final row (their outputs are dropped).
    """
    mesh = result.sharded.mesh
    if batch_size % data_parallel_size(mesh):
        raise ConfigError(f"task.predict_batch_size ({batch_size}) must divide over the "
                          f"{data_parallel_size(mesh)} data-parallel devices")
    inputs = dict(zip(("input_ids", "token_type_ids", "attention_mask"),
                      encoder_inputs(arrays)))
    rows = len(inputs["input_ids"])
    shardings = {k: batch_sharding(mesh, v.ndim) for k, v in inputs.items()}
    forward = jax.jit(lambda p, b: model.apply(p, *encoder_inputs(b)),
                      in_shardings=(result.sharded.state_shardings.params, shardings),
                      out_shardings=replicated(mesh))
    outputs = []
    with mesh_context(mesh):
        for start in range(0, rows, batch_size):
            index = np.minimum(np.arange(start, start + batch_size), rows - 1)
            host = {k: v[index] for k, v in inputs.items()}
            batch = {k: jax.make_array_from_callback(v.shape, shardings[k],
                                                     lambda idx, v=v: v[idx])
                     for k, v in host.items()}
            outputs.append(jax.device_get(forward(params, batch)))
    return jax.tree.map(lambda *parts: np.concatenate(parts)[:rows], *outputs)


def logged_throughput(workdir: str, seq_len: int) -> dict[str, float]:
    """Median training examples/s and MFU over the logged windows after the first (which
    includes compilation), from the run's metrics.jsonl."""
    records = [r for r in read_metrics(storage.join(workdir, "metrics.jsonl"))
               if "tokens_per_sec" in r]
    steady = records[1:] or records
    if not steady:
        return {"train_examples_per_sec": 0.0, "mfu": 0.0}
    return {"train_examples_per_sec": statistics.median(r["tokens_per_sec"] for r in steady)
            / seq_len, "mfu": statistics.median(r["mfu"] for r in steady)}
