"""Pretraining data for either family: corpus -> tokenizer -> examples (train, held-out)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from lmscale.data.bert_pretrain import BertPretrainingOptions, create_pretraining_examples
from lmscale.data.corpus import read_documents, split_held_out
from lmscale.data.gpt_pretrain import pack_token_stream, token_stream
from lmscale.data.tokenizer import (
    Tokenizer, TokenizerTrainSpec, load_tokenizer, train_sentencepiece,
)
from lmscale.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class PretrainingData:
    tokenizer: Tokenizer
    train: dict[str, np.ndarray]
    held_out: dict[str, np.ndarray]
    unigram_loss: float  # entropy of the training tokens' unigram distribution (nats)


def unigram_entropy(tokens: np.ndarray, vocab_size: int) -> float:
    """The loss of a model that ignores context: a baseline pretraining must beat."""
    counts = np.bincount(tokens.ravel(), minlength=vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def obtain_tokenizer(data_cfg, vocab_size: int, train_docs: list[str], workdir: str,
                     is_main: bool = True) -> Tokenizer:
    """The configured tokenizer, or one trained on the training split and kept in the run
    directory (reused on resume, so ids never change under a checkpoint)."""
    if data_cfg.tokenizer:
        return load_tokenizer(data_cfg.tokenizer)
    prefix = os.path.join(workdir, "tokenizer", "spm")
    if not os.path.isfile(prefix + ".model"):
        if not is_main:
            raise ConfigError("multi-process runs need data.tokenizer set to a trained model")
        text_file = prefix + "-train.txt"
        os.makedirs(os.path.dirname(prefix), exist_ok=True)
        with open(text_file, "w", encoding="utf-8") as f:
            f.write("\n".join(train_docs))
        log.info("training a %d-piece %s tokenizer on the training split", vocab_size,
                 data_cfg.tokenizer_model_type)
        train_sentencepiece(TokenizerTrainSpec(inputs=(text_file,), vocab_size=vocab_size,
                                               model_type=data_cfg.tokenizer_model_type), prefix)
        os.remove(text_file)
    return load_tokenizer(prefix + ".model")


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


def prepare_pretraining_data(data_cfg, model_cfg, workdir: str, seq_len: int,
                             max_predictions: int, is_main: bool = True) -> PretrainingData:
    documents = read_documents(list(data_cfg.sources), data_cfg.document_split,
                               data_cfg.tfds_data_dir or None)
    train_docs, held_docs = split_held_out(documents, data_cfg.eval_fraction)
    tokenizer = obtain_tokenizer(data_cfg, model_cfg.vocab_size, train_docs, workdir, is_main)
    if tokenizer.vocab_size != model_cfg.vocab_size:
        raise ConfigError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but model.vocab_size is "
            f"{model_cfg.vocab_size}; set --config.model.vocab_size={tokenizer.vocab_size}"
        )
    if seq_len > model_cfg.max_len:
        raise ConfigError(f"data.seq_len ({seq_len}) exceeds model.max_len ({model_cfg.max_len})")
    train = build_examples(model_cfg.family, train_docs, tokenizer, data_cfg, seq_len,
                           max_predictions, data_cfg.seed)
    held_out = build_examples(model_cfg.family, held_docs, tokenizer, data_cfg,
                              seq_len, max_predictions, data_cfg.seed + 1)
    tokens = train["targets"][train["loss_mask"] > 0] if model_cfg.family == "gpt" else \
        train["input_ids"][train["attention_mask"] > 0]
    return PretrainingData(tokenizer, train, held_out,
                           unigram_entropy(tokens, tokenizer.vocab_size))
