"""Pretrained BERT directories: the lmscale export format, its writer and the one loader.

An lmscale pretrained directory holds

    model_config.json   the `ModelConfig` fields (`vocab_multiple` 1)
    params/             the parameter tree, an Orbax StandardCheckpointer checkpoint, with
                        the vocabulary unpadded, so that an export does not depend on the
                        tensor-parallel size it was trained or will run at
    vocab.txt, tokenizer.json, ... or spm.model   the tokenizer the ids belong to

`lmscale convert hf` and `lmscale export` write it; `load_pretrained` reads it, and also an
`lmscale pretrain` run directory or a Hugging Face BERT or GPT-2 directory as they are, so a
fine-tuning config's `init.checkpoint` may name any of the three.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass

import jax
import numpy as np
import orbax.checkpoint as ocp

from lmscale import storage
from lmscale.convert.hf_bert import read_hf_checkpoint, write_hf_checkpoint
from lmscale.convert.hf_gpt2 import read_hf_gpt2, write_hf_gpt2
from lmscale.convert.spm_to_hf import write_hf_tokenizer
from lmscale.data.load_tokenizer import load_tokenizer
from lmscale.data.tokenizer import SentencePieceTokenizer, Tokenizer
from lmscale.errors import InputError
from lmscale.models.config import ModelConfig, check_tensor_parallel
from lmscale.models.vocab import fit_vocab, unpad_vocab
from lmscale.train.checkpoint import Checkpointer

log = logging.getLogger(__name__)

MODEL_CONFIG = "model_config.json"
PARAMS_DIR = "params"
SENTENCEPIECE_FILE = "spm.model"
# What a Hugging Face directory keeps its tokenizer in: BERT's WordPiece, GPT-2's BPE.
WORDPIECE_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json")
GPT2_BPE_FILES = ("vocab.json", "merges.txt")


@dataclass(frozen=True)
class Pretrained:
    config: ModelConfig
    # {"params": {...}} (BERT: "bert" + optional heads; GPT), numpy leaves; the vocabulary
    # has exactly `config.padded_vocab_size` rows.
    params: dict
    tokenizer: Tokenizer
    tokenizer_files: list[str]  # paths that define the tokenizer, copied on export


def save_pretrained(out_dir: str, config: ModelConfig, params: dict,
                    tokenizer_files: list[str]) -> None:
    """Write the lmscale pretrained format (see the module docstring); `params` may have
    the vocabulary padded to any size, the export holds it unpadded."""
    storage.write_json(storage.join(out_dir, MODEL_CONFIG),
                       dataclasses.asdict(dataclasses.replace(config, vocab_multiple=1)))
    host_params = unpad_vocab(jax.tree.map(np.asarray, params), config)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(storage.absolute(storage.join(out_dir, PARAMS_DIR)), host_params,
                          force=True)
    copy_tokenizer_files(tokenizer_files, out_dir)


def copy_tokenizer_files(files: list[str], out_dir: str) -> None:
    """Copy a tokenizer's files into `out_dir`, where `load_pretrained` looks for them."""
    storage.makedirs(out_dir)
    for path in files:
        # A SentencePiece model keeps one fixed name so the loader can find it.
        name = SENTENCEPIECE_FILE if path.endswith(".model") else storage.as_path(path).name
        target = storage.join(out_dir, name)
        if storage.absolute(path) != storage.absolute(target):
            storage.copy_file(path, target)


def tokenizer_files_in(directory: str) -> list[str]:
    """The files of a directory that define a tokenizer (what an export copies)."""
    names = (SENTENCEPIECE_FILE, *WORDPIECE_FILES, *GPT2_BPE_FILES)
    return [storage.join(directory, n) for n in names
            if storage.isfile(storage.join(directory, n))]


def _tokenizer_from_files(files: list[str], where: str) -> Tokenizer:
    spm = [f for f in files if f.endswith(".model")]
    if spm:
        return SentencePieceTokenizer(spm[0])
    if not files:
        raise InputError(f"{where} holds no tokenizer (vocab.txt, tokenizer.json or a "
                         "SentencePiece .model); copy the one the model was trained with")
    return load_tokenizer(os.fspath(storage.as_path(files[0]).parent))


def _load_export(directory: str) -> tuple[ModelConfig, dict, list[str]]:
    config = ModelConfig.from_dict(storage.read_json(storage.join(directory, MODEL_CONFIG)))
    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(storage.absolute(storage.join(directory, PARAMS_DIR)))
    return config, jax.tree.map(np.asarray, params), tokenizer_files_in(directory)


def _load_pretrain_run(directory: str, run_config: dict) -> tuple[ModelConfig, dict, list[str]]:
    config = ModelConfig.from_dict(run_config["model"])
    params = Checkpointer(storage.join(directory, "checkpoints")).restore_params()
    # `lmscale pretrain` uses data.tokenizer, or trains one into the run directory.
    spm = run_config.get("data", {}).get("tokenizer") or \
        storage.join(directory, "tokenizer", "spm.model")
    files = [spm] if storage.isfile(spm) else []
    if not files and storage.isdir(spm):
        files = tokenizer_files_in(spm)
    if not files:  # fine-tuning runs copy their tokenizer here
        files = tokenizer_files_in(storage.join(directory, "tokenizer"))
    return config, params, files


def load_pretrained(directory: str, tensor: int | None = None) -> Pretrained:
    """Config, parameters and tokenizer of an lmscale export, an `lmscale pretrain` run
    directory, or a Hugging Face BERT or GPT-2 checkpoint directory.

    The vocabulary comes unpadded (`vocab_multiple` 1), whatever padding the source has;
    with `tensor`, padded for that many tensor-parallel devices instead
    (`ModelConfig.for_tensor_parallel`, zero rows added). Either way `params` fit `config`.
    """
    if not storage.isdir(directory):
        raise InputError(f"pretrained checkpoint {directory!r} is not a directory")
    config_file = storage.join(directory, "config.json")
    run_config = storage.read_json(config_file) if storage.isfile(config_file) else {}
    if storage.isfile(storage.join(directory, MODEL_CONFIG)):
        config, params, files = _load_export(directory)
    elif "model" in run_config and storage.isdir(storage.join(directory, "checkpoints")):
        config, params, files = _load_pretrain_run(directory, run_config)
    elif run_config:
        converted = read_hf(storage.local_copy(directory), run_config)
        config, params, files = converted.config, converted.params, tokenizer_files_in(directory)
    else:
        raise InputError(f"{directory!r} is neither an lmscale export ({MODEL_CONFIG}), an "
                         "lmscale pretrain run (config.json + checkpoints/) nor a Hugging Face "
                         "checkpoint (config.json + model.safetensors)")
    if tensor is None:
        config = dataclasses.replace(config, vocab_multiple=1)
    else:
        check_tensor_parallel(config, tensor)
        config = config.for_tensor_parallel(tensor)
    params = fit_vocab(params, config)
    tokenizer = _tokenizer_from_files(files, directory)
    check_vocab_sizes(config, tokenizer, directory)
    return Pretrained(config, params, tokenizer, files)


def check_vocab_sizes(config: ModelConfig, tokenizer: Tokenizer, where: str) -> None:
    """Token ids must index the embedding table. A table larger than the vocabulary is
    legitimate (padded for fast matmuls) and only logged; a smaller one is an error."""
    if tokenizer.vocab_size > config.vocab_size:
        raise InputError(
            f"{where}: the tokenizer has {tokenizer.vocab_size} tokens but the checkpoint's "
            f"embedding table only {config.vocab_size}; they do not belong together (use the "
            "tokenizer the checkpoint was trained with)")
    if tokenizer.vocab_size < config.vocab_size:
        log.info("%s: embedding table has %d rows for %d tokens (padded vocabulary)", where,
                 config.vocab_size, tokenizer.vocab_size)


def read_hf(model_dir: str, hf_config: dict | None = None):
    """A Hugging Face checkpoint of the architecture its config.json `model_type` names."""
    if hf_config is None:
        config_file = os.path.join(model_dir, "config.json")
        if not os.path.isfile(config_file):
            raise InputError(f"{model_dir!r} has no config.json; is it a Hugging Face "
                             "checkpoint?")
        with open(config_file, encoding="utf-8") as f:
            hf_config = json.load(f)
    if hf_config.get("model_type") == "gpt2":
        return read_hf_gpt2(model_dir)
    return read_hf_checkpoint(model_dir)


def convert_hf(model_dir: str, out_dir: str) -> list[str]:
    """`lmscale convert hf`: a Hugging Face BERT or GPT-2 directory (by config.json
    `model_type`) into the lmscale format. Returns the parts the source lacks (pooler,
    MLM/NSP heads): a model that needs them initialises them afresh and says so."""
    model_dir = storage.local_copy(model_dir)
    converted = read_hf(model_dir)
    files = tokenizer_files_in(model_dir)
    check_vocab_sizes(converted.config, _tokenizer_from_files(files, model_dir), model_dir)
    save_pretrained(out_dir, converted.config, converted.params, files)
    return converted.absent


def export_hf(checkpoint_dir: str, out_dir: str) -> str:
    """`lmscale convert to-hf`: any directory `load_pretrained` reads, into transformers'
    layout (model.safetensors, config.json, tokenizer files). Returns the architecture."""
    pretrained = load_pretrained(checkpoint_dir)
    write = write_hf_gpt2 if pretrained.config.family == "gpt" else write_hf_checkpoint
    with storage.local_output_dir(out_dir) as local_out:
        architecture = write(local_out, pretrained.config, pretrained.params)
        copy_tokenizer_files(pretrained.tokenizer_files, local_out)
        if isinstance(pretrained.tokenizer, SentencePieceTokenizer):
            # spm.model stays for lmscale; transformers reads tokenizer.json.
            try:
                write_hf_tokenizer(pretrained.tokenizer.model_file, pretrained.config.family,
                                   pretrained.config.max_len, local_out)
            except InputError as err:
                log.warning("%s; the export keeps only spm.model, which transformers' "
                            "AutoTokenizer cannot read", err)
    return architecture
