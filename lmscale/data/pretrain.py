"""Pretraining data for either family: corpus -> tokenizer -> examples, prepared once.

The tokenizer is trained (or loaded) first; the examples it yields are written as a TFDS
array_record dataset keyed by a fingerprint of everything that determines them, so later
runs, resumed runs and other processes read the same examples without rebuilding them.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from collections.abc import Callable

import numpy as np

from lmscale import storage
from lmscale.data.bert_pretrain import BertPretrainingOptions, create_pretraining_examples
from lmscale.data.corpus import BUILTIN_STDLIB, read_documents, split_held_out
from lmscale.data.gpt_pretrain import pack_token_stream, token_stream
from lmscale.data.prepared import file_digest, fingerprint, prepare_once
from lmscale.data.load_tokenizer import load_tokenizer
from lmscale.data.tokenizer import (
    Tokenizer, TokenizerTrainSpec, expand_inputs, train_sentencepiece,
)
from lmscale.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class PretrainingData:
    tokenizer: Tokenizer
    train: object  # random-access source of example dicts (len, __getitem__)
    held_out: object
    unigram_loss: float  # entropy of the training tokens' unigram distribution (nats)


def unigram_entropy(tokens: np.ndarray, vocab_size: int) -> float:
    """The loss of a model that ignores context: a baseline pretraining must beat."""
    counts = np.bincount(tokens.ravel(), minlength=vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def _source_identity(source: str) -> object:
    """What identifies a source's content cheaply: files by path, size and mtime."""
    if source == BUILTIN_STDLIB:
        return [source, sys.version]
    if source.startswith("tfds:"):
        return source
    return [(path, storage.size(path), storage.mtime(path))
            for path in expand_inputs([source])]


def _tokenizer_identity(path: str) -> str:
    """A SentencePiece model by its bytes; a checkpoint's vocabulary directory by path."""
    return file_digest(path) if storage.isfile(path) else storage.absolute(path)


def tokenizer_path(data_cfg, workdir: str) -> str:
    return data_cfg.tokenizer or storage.join(workdir, "tokenizer", "spm.model")


def obtain_tokenizer(data_cfg, vocab_size: int, train_docs: Callable[[], list[str]],
                     workdir: str, is_main: bool, barrier: Callable[[str], None]) -> Tokenizer:
    """The configured tokenizer, or one trained on the training split and kept in the run
    directory (reused on resume, so ids never change under a checkpoint)."""
    path = tokenizer_path(data_cfg, workdir)
    if not data_cfg.tokenizer and is_main and not storage.isfile(path):
        log.info("training a %d-piece %s tokenizer on the training split", vocab_size,
                 data_cfg.tokenizer_model_type)
        # Trained in a local folder (SentencePiece writes local files), then put in place:
        # the .vocab first, so a .model that exists comes with its .vocab.
        with tempfile.TemporaryDirectory(prefix="lmscale-tokenizer-") as folder:
            text_file = os.path.join(folder, "train.txt")
            with open(text_file, "w", encoding="utf-8") as f:
                f.write("\n".join(train_docs()))
            model = train_sentencepiece(
                TokenizerTrainSpec(inputs=(text_file,), vocab_size=vocab_size,
                                   model_type=data_cfg.tokenizer_model_type),
                os.path.join(folder, "spm"))
            prefix = path[: -len(".model")]
            for suffix in (".vocab", ".model"):
                with open(model[: -len(".model")] + suffix, "rb") as f:
                    storage.write_bytes(prefix + suffix, f.read())
    barrier("tokenizer")
    return load_tokenizer(path)


def build_examples(family: str, documents: list[str], tokenizer: Tokenizer, data_cfg,
                   seq_len: int, max_predictions: int, seed: int) -> dict[str, np.ndarray]:
    if family == "gpt":
        return pack_token_stream(token_stream(documents, tokenizer), seq_len,
                                 tokenizer.pad_id or 0)
    options = BertPretrainingOptions(
        max_seq_length=seq_len, short_seq_prob=data_cfg.short_seq_prob,
        masked_lm_prob=data_cfg.masked_lm_prob, max_predictions_per_seq=max_predictions,
        dupe_factor=data_cfg.dupe_factor, whole_word_mask=data_cfg.whole_word_mask, seed=seed)
    return create_pretraining_examples(documents, tokenizer, options)


def _no_barrier(name: str) -> None:
    return None


def prepare_pretraining_data(data_cfg, model_cfg, workdir: str, seq_len: int,
                             max_predictions: int, is_main: bool = True,
                             barrier: Callable[[str], None] = _no_barrier) -> PretrainingData:
    if seq_len > model_cfg.max_len:
        raise ConfigError(f"data.seq_len ({seq_len}) exceeds model.max_len ({model_cfg.max_len})")
    sources = list(data_cfg.sources)
    identity = [_source_identity(s) for s in sources]  # fails early on a missing file

    @functools.cache
    def splits() -> tuple[list[str], list[str]]:
        documents = read_documents(sources, data_cfg.document_split,
                                   data_cfg.tfds_data_dir or None)
        return split_held_out(documents, data_cfg.eval_fraction)

    tokenizer = obtain_tokenizer(data_cfg, model_cfg.vocab_size, lambda: splits()[0], workdir,
                                 is_main, barrier)
    if tokenizer.vocab_size != model_cfg.vocab_size:
        raise ConfigError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but model.vocab_size is "
            f"{model_cfg.vocab_size}; set --config.model.vocab_size={tokenizer.vocab_size} "
            f"(tokenizer: {tokenizer_path(data_cfg, workdir)})")
    bert_options = {k: data_cfg[k] for k in ("short_seq_prob", "masked_lm_prob", "dupe_factor",
                                             "whole_word_mask")}
    key = fingerprint({
        "family": model_cfg.family, "sources": identity, "split": data_cfg.document_split,
        "eval_fraction": data_cfg.eval_fraction, "seed": data_cfg.seed, "seq_len": seq_len,
        "max_predictions": max_predictions, "bert": bert_options,
        "tokenizer": _tokenizer_identity(tokenizer_path(data_cfg, workdir)),
    })

    def build():
        train_docs, held_docs = splits()
        train = build_examples(model_cfg.family, train_docs, tokenizer, data_cfg, seq_len,
                               max_predictions, data_cfg.seed)
        held_out = build_examples(model_cfg.family, held_docs, tokenizer, data_cfg, seq_len,
                                  max_predictions, data_cfg.seed + 1)
        tokens = (train["targets"][train["loss_mask"] > 0] if model_cfg.family == "gpt"
                  else train["input_ids"][train["attention_mask"] > 0])
        return ({"train": train, "held_out": held_out},
                {"unigram_loss": unigram_entropy(tokens, tokenizer.vocab_size),
                 "sources": sources, "seq_len": seq_len})

    root = data_cfg.prepared_dir or storage.join(workdir, "data")
    prepared, metadata = prepare_once(root, key, build, is_main, barrier)
    return PretrainingData(tokenizer, prepared["train"], prepared["held_out"],
                           metadata["unigram_loss"])
