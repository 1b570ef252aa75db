"""One shard of the corpus -> its examples, written: the function every runner calls.

`prepare_shard(spec, shard, out_dir, stats_dir)` reads the shard's text once and writes
its training and held-out examples as one array_record file each
(`prepared.write_examples_file`). It is a pure function of the shard's text, the tokenizer
and the options, so the in-process path (shard after shard) and the Beam path (shards in
parallel workers) write the same files, and the dataset is the same example for example.
Per shard:

- its documents are split into training and held-out ones (`corpus.held_out_mask`);
- GPT: the documents' tokens, each followed by end-of-text, are packed into rows of
  `seq_len` (`gpt_pretrain.pack_token_pieces`); a shard's last row is padded;
- BERT: `create_pretraining_data`'s instances (`bert_pretrain.pretraining_examples`),
  with random next sentences drawn from the shard's other documents: the original script
  was itself run once per input file shard. Its generator is seeded with
  (data.seed, split, shard index), so no shard depends on another.

What the dataset's metadata needs (examples, documents, token counts for the unigram
baseline, source shards skipped as bad) goes to one small JSON file per shard beside the
dataset, and `summarize` adds them up once every shard is done: Beam workers hand nothing
back to the caller otherwise. A bad source shard that stops preparation is recorded the
same way, so the caller can name it whatever the runner made of the exception.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from lmscale.data.bert_pretrain import (
    BertPretrainingOptions, TooFewDocuments, pretraining_examples,
)
from lmscale.data.bert_pretrain import example_features as bert_features
from lmscale.data.corpus import BadSourceShard, Shard, held_out_mask, shard_documents
from lmscale.data.gpt_pretrain import document_tokens, pack_token_pieces
from lmscale.data.gpt_pretrain import example_features as gpt_features
from lmscale.data.load_tokenizer import load_tokenizer
from lmscale.data.prepared import Features, shard_file, write_examples_file
from lmscale.data.tokenizer import Tokenizer

log = logging.getLogger(__name__)

SPLITS = ("train", "held_out")
_SPLIT_CODE = {"train": 0, "held_out": 1}
STATS_DIR = "shard_stats"
ERRORS_DIR = "shard_errors"


@dataclass(frozen=True)
class ExampleSpec:
    """Everything besides the text that determines a shard's examples (picklable: Beam
    ships it to its workers)."""

    family: str  # "gpt" or "bert"
    tokenizer: str  # a local tokenizer path (a .model file or a checkpoint directory)
    seq_len: int
    max_predictions: int = 20
    seed: int = 0
    eval_fraction: float = 0.05
    short_seq_prob: float = 0.1
    masked_lm_prob: float = 0.15
    dupe_factor: int = 1
    whole_word_mask: bool = False
    skip_bad_shards: bool = False

    def bert_options(self, split: str, shard_index: int) -> BertPretrainingOptions:
        return BertPretrainingOptions(
            max_seq_length=self.seq_len, short_seq_prob=self.short_seq_prob,
            masked_lm_prob=self.masked_lm_prob, max_predictions_per_seq=self.max_predictions,
            dupe_factor=self.dupe_factor, whole_word_mask=self.whole_word_mask,
            seed=(self.seed, _SPLIT_CODE[split], shard_index))


def example_features(spec: ExampleSpec) -> Features:
    if spec.family == "gpt":
        return gpt_features(spec.seq_len)
    return bert_features(spec.bert_options("train", 0))


@functools.cache
def _tokenizer(path: str) -> Tokenizer:
    """Loaded once per process (a Beam worker serves many shards)."""
    return load_tokenizer(path)


class _TokenCounts:
    """Per-id token counts, with arrays buffered so a bincount over the whole vocabulary
    runs once per ~1M tokens rather than once per example."""

    def __init__(self, vocab_size: int):
        self.counts = np.zeros(vocab_size, np.int64)
        self._pending: list[np.ndarray] = []
        self._pending_size = 0

    def add(self, tokens: np.ndarray) -> None:
        self._pending.append(tokens)
        self._pending_size += len(tokens)
        if self._pending_size >= 1 << 20:
            self.flush()

    def flush(self) -> np.ndarray:
        if self._pending:
            self.counts += np.bincount(np.concatenate(self._pending),
                                       minlength=len(self.counts))
            self._pending, self._pending_size = [], 0
        return self.counts


def split_examples(spec: ExampleSpec, split: str, shard_index: int, documents: list[str],
                   tokenizer: Tokenizer) -> Iterator[dict[str, np.ndarray]]:
    """The examples of one split of one shard, in order (`documents`: that split's)."""
    if not documents:
        return
    if spec.family == "gpt":
        yield from pack_token_pieces(document_tokens(documents, tokenizer), spec.seq_len,
                                     tokenizer.pad_id or 0)
    else:
        yield from pretraining_examples(documents, tokenizer,
                                        spec.bert_options(split, shard_index))


def _counting(examples: Iterator[dict[str, np.ndarray]],
              counts: _TokenCounts) -> Iterator[dict[str, np.ndarray]]:
    """`examples`, counting the tokens each adds to the unigram baseline: GPT's targets,
    BERT's inputs."""
    for example in examples:
        if "targets" in example:
            counts.add(example["targets"][example["loss_mask"] > 0])
        else:
            counts.add(example["input_ids"][example["attention_mask"] > 0])
        yield example


def prepare_shard(spec: ExampleSpec, shard: Shard, out_dir: str, stats_dir: str) -> dict:
    """Write `shard`'s examples of every split under `out_dir` and its stats file under
    `stats_dir`; returns the stats."""
    skipped: list[dict] = []

    def skip(bad: BadSourceShard) -> None:
        skipped.append({"source": bad.name, "reason": bad.reason})

    try:
        documents = shard_documents(shard, skip if spec.skip_bad_shards else None)
    except BadSourceShard as bad:
        _write_json(os.path.join(stats_dir, ERRORS_DIR, f"{shard.index:06d}.json"),
                    {"source": bad.name, "reason": bad.reason, "message": str(bad)})
        raise
    mask = held_out_mask(len(documents), spec.eval_fraction, first_shard=shard.index == 0)
    tokenizer = _tokenizer(spec.tokenizer)
    stats = {"shard": shard.index, "sources": shard.names, "skipped": skipped, "splits": {}}
    for split in SPLITS:
        chosen = [doc for doc, held in zip(documents, mask) if held == (split == "held_out")]
        counts = _TokenCounts(tokenizer.vocab_size)
        unused = 0
        try:
            count, size = write_examples_file(
                shard_file(out_dir, split, shard.index),
                _counting(split_examples(spec, split, shard.index, chosen, tokenizer), counts),
                example_features(spec))
        except TooFewDocuments:
            # BERT's random next segment needs another document of the same shard.
            count, size, unused = 0, 0, len(chosen)
        ids = np.flatnonzero(counts.flush())
        stats["splits"][split] = {
            "examples": count, "bytes": size, "documents": len(chosen),
            "unused_documents": unused, "token_ids": ids.tolist(),
            "token_counts": counts.counts[ids].tolist()}
    _write_json(stats_path(stats_dir, shard.index), stats)
    return stats


def stats_path(stats_dir: str, shard_index: int) -> str:
    return os.path.join(stats_dir, STATS_DIR, f"{shard_index:06d}.json")


def _write_json(path: str, value: dict) -> None:
    """Written beside and renamed: a retried Beam bundle rewrites the same content."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    staging = f"{path}.{os.getpid()}.incomplete"
    with open(staging, "w", encoding="utf-8") as f:
        json.dump(value, f)
    os.replace(staging, path)


def recorded_errors(stats_dir: str) -> list[dict]:
    """Bad source shards that stopped preparation, as the shards recorded them."""
    folder = os.path.join(stats_dir, ERRORS_DIR)
    errors = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            errors.append(json.load(f))
    return errors


def clear_records(stats_dir: str) -> None:
    """Forget an earlier attempt's stats and errors."""
    for name in (STATS_DIR, ERRORS_DIR):
        if os.path.isdir(os.path.join(stats_dir, name)):
            for entry in os.listdir(os.path.join(stats_dir, name)):
                os.remove(os.path.join(stats_dir, name, entry))


def unigram_entropy(counts: np.ndarray) -> float:
    """The loss of a model that ignores context: a baseline pretraining must beat."""
    counts = np.asarray(counts, np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def summarize(stats_dir: str, shards: Sequence[Shard], vocab_size: int
              ) -> tuple[dict, dict[str, list[tuple[int, int, int]]]]:
    """(the dataset's metadata, per split the (shard, examples, bytes) of its files) from
    the shards' stats files."""
    metadata = {key: dict.fromkeys(SPLITS, 0)
                for key in ("examples", "documents", "unused_documents")}
    lengths: dict[str, list[tuple[int, int, int]]] = {split: [] for split in SPLITS}
    train_counts = np.zeros(vocab_size, np.int64)
    skipped = []
    for shard in shards:
        with open(stats_path(stats_dir, shard.index), encoding="utf-8") as f:
            stats = json.load(f)
        skipped += stats["skipped"]
        for split, part in stats["splits"].items():
            for key in metadata:
                metadata[key][split] += part[key]
            lengths[split].append((shard.index, part["examples"], part["bytes"]))
        np.add.at(train_counts, stats["splits"]["train"]["token_ids"],
                  stats["splits"]["train"]["token_counts"])
    metadata.update(
        shards=len(shards), skipped_sources=skipped,
        unigram_loss=unigram_entropy(train_counts) if train_counts.any() else 0.0)
    return metadata, lengths
