"""Pretraining data for either family: corpus -> tokenizer -> examples, prepared once.

The tokenizer is trained (or loaded) first, on a bounded, seeded sample of the training
split's lines. The corpus is then cut into shards (`corpus.plan_shards`) and each shard's
examples built (`shard_examples`): in this process, shard after shard
(`data.prepare_runner="in_process"`, the default), or by Apache Beam workers (`"beam"`,
`beam_prepare.py`). Either way the examples are the same, written as a TFDS array_record
dataset keyed by a fingerprint of everything that determines them (not the runner), so
later runs, resumed runs and other processes read the same examples without rebuilding.

Memory follows the shard, not the corpus: one shard's documents at a time (bounded by
`data.shard_mb` and the largest single file), and the tokenizer sample
(`data.tokenizer_sample_sentences` lines). Examples stream to their shard's file as they
are made; with Beam, each worker holds the shard it is preparing.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grain

from lmscale import storage
from lmscale.data import beam_prepare
from lmscale.data.corpus import (
    BUILTIN_STDLIB, BadSourceShard, Shard, held_out_mask, plan_shards, shard_documents,
)
from lmscale.data.load_tokenizer import load_tokenizer
from lmscale.data.mixture import split_source_weights
from lmscale.data.prepared import (
    file_digest, finish_dataset, fingerprint, new_incomplete_dir, prepare_once,
)
from lmscale.data.shard_examples import (
    SPLITS, ExampleSpec, clear_records, example_features, prepare_shard, recorded_errors,
    summarize,
)
from lmscale.data.tokenizer import Tokenizer, TokenizerTrainSpec, expand_inputs, train_sentencepiece
from lmscale.errors import ConfigError, InputError

log = logging.getLogger(__name__)

RUNNERS = ("in_process", "beam")
# Example semantics: bump when a change makes the same inputs give other examples.
_LAYOUT = "shards-1"
# The tokenizer sample is drawn from shards read in a seeded order until this many times
# `tokenizer_sample_sentences` lines have been seen (or the corpus ends).
_SAMPLE_READ_FACTOR = 4


@dataclass(frozen=True)
class MixturePart:
    """One weighted source of a mixture, prepared on its own."""
    source: str
    weight: float
    train: object
    held_out: object


@dataclass
class PretrainingData:
    tokenizer: Tokenizer
    train: object  # random-access source of example dicts (len, __getitem__)
    held_out: object
    # Entropy of the training tokens' unigram distribution (nats). For a mixture, the
    # weighted mean of its sources' (a lower bound of the mixture's own).
    unigram_loss: float
    metadata: dict = field(default_factory=dict)  # counts, skipped source shards, ...
    # `data.sources` given as SOURCE@WEIGHT: the parts the loader mixes by weight
    # (`lmscale.data.mixture`); `train` / `held_out` are then their concatenation.
    mixture: list[MixturePart] = field(default_factory=list)


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


def _skip_handler(data_cfg) -> Callable[[BadSourceShard], None] | None:
    """None (bad input stops the tokenizer sample) unless data.skip_bad_shards; then each
    skipped source shard is logged (the dataset's metadata lists them once prepared)."""
    if not data_cfg.skip_bad_shards:
        return None
    return lambda bad: log.warning("skipping bad source shard %s: %s", bad.name, bad.reason)


def sample_training_lines(shards: Sequence[Shard], data_cfg,
                          on_bad: Callable[[BadSourceShard], None] | None = None) -> list[str]:
    """A uniform random sample of at most `data.tokenizer_sample_sentences` lines of the
    training documents, as SentencePiece's `input_sentence_size` +
    `shuffle_input_sentence` draw one, but without reading the whole corpus first.

    Shards are read in an order shuffled by `data.seed` until 4x the sample size in lines
    has been seen (or all of them); a reservoir (Vitter's algorithm R, seeded) keeps the
    sample. Memory: the sample and one shard. A corpus smaller than the sample is taken
    whole and in order.
    """
    size = int(data_cfg.tokenizer_sample_sentences)
    if size < 1:
        raise ConfigError(f"data.tokenizer_sample_sentences is {size}; it must be >= 1")
    rng = random.Random(data_cfg.seed)
    order = list(shards)
    rng.shuffle(order)
    sample: list[str] = []
    seen = 0
    for shard in order:
        documents = shard_documents(shard, on_bad)
        mask = held_out_mask(len(documents), data_cfg.eval_fraction, shard.index == 0)
        for document, held in zip(documents, mask):
            if held:
                continue
            for line in document.split("\n"):
                if seen < size:
                    sample.append(line)
                else:
                    slot = rng.randrange(seen + 1)
                    if slot < size:
                        sample[slot] = line
                seen += 1
        if seen >= _SAMPLE_READ_FACTOR * size:
            break
    if not sample:
        raise InputError("the training split holds no text to train a tokenizer on")
    log.info("tokenizer sample: %d of %s lines seen", len(sample), f"{seen:,}")
    return sample


def obtain_tokenizer(data_cfg, vocab_size: int, shards: Callable[[], list[Shard]],
                     workdir: str, is_main: bool, barrier: Callable[[str], None]) -> Tokenizer:
    """The configured tokenizer, or one trained on a sample of the training split and kept
    in the run directory (reused on resume, so ids never change under a checkpoint)."""
    path = tokenizer_path(data_cfg, workdir)
    if not data_cfg.tokenizer and is_main and not storage.isfile(path):
        log.info("training a %d-piece %s tokenizer on a sample of the training split",
                 vocab_size, data_cfg.tokenizer_model_type)
        lines = sample_training_lines(shards(), data_cfg, _skip_handler(data_cfg))
        # Trained in a local folder (SentencePiece writes local files), then put in place:
        # the .vocab first, so a .model that exists comes with its .vocab.
        with tempfile.TemporaryDirectory(prefix="lmscale-tokenizer-") as folder:
            text_file = os.path.join(folder, "train.txt")
            with open(text_file, "w", encoding="utf-8") as f:
                f.write("\n".join(lines))
            del lines
            model = train_sentencepiece(
                TokenizerTrainSpec(inputs=(text_file,), vocab_size=vocab_size,
                                   model_type=data_cfg.tokenizer_model_type,
                                   input_sentence_size=int(data_cfg.tokenizer_sample_sentences)),
                os.path.join(folder, "spm"))
            prefix = path[: -len(".model")]
            for suffix in (".vocab", ".model"):
                with open(model[: -len(".model")] + suffix, "rb") as f:
                    storage.write_bytes(prefix + suffix, f.read())
    barrier("tokenizer")
    return load_tokenizer(path)


def example_spec(data_cfg, family: str, tokenizer_file: str, seq_len: int,
                 max_predictions: int) -> ExampleSpec:
    return ExampleSpec(
        family=family, tokenizer=tokenizer_file, seq_len=seq_len,
        max_predictions=max_predictions, seed=data_cfg.seed,
        eval_fraction=data_cfg.eval_fraction, short_seq_prob=data_cfg.short_seq_prob,
        masked_lm_prob=data_cfg.masked_lm_prob, dupe_factor=data_cfg.dupe_factor,
        whole_word_mask=data_cfg.whole_word_mask, skip_bad_shards=data_cfg.skip_bad_shards)


def _check_runner(runner: str) -> None:
    if runner not in RUNNERS:
        raise ConfigError(f"data.prepare_runner {runner!r} must be one of {RUNNERS}")


def beam_settings(data_cfg) -> beam_prepare.BeamSettings:
    return beam_prepare.BeamSettings(workers=int(data_cfg.prepare_workers),
                                     options=tuple(data_cfg.beam_options))


def write_shard_examples(data_dir: str, spec: ExampleSpec, shards: Sequence[Shard],
                         runner: str = "in_process",
                         beam: beam_prepare.BeamSettings | None = None) -> dict:
    """Build every shard's examples with `runner` and write them as a TFDS dataset under
    the local folder `data_dir`; returns the dataset's metadata (see `summarize`). Nothing
    appears at the dataset's final path unless every shard succeeded."""
    _check_runner(runner)
    clear_records(data_dir)
    incomplete = new_incomplete_dir(data_dir)
    try:
        if runner == "beam":
            beam_prepare.run_pipeline(beam or beam_prepare.BeamSettings(), spec, shards,
                                      incomplete, data_dir)
        else:
            for shard in shards:
                prepare_shard(spec, shard, incomplete, data_dir)
        vocab_size = load_tokenizer(spec.tokenizer).vocab_size
        metadata, lengths = summarize(data_dir, shards, vocab_size)
        for split in SPLITS:
            if metadata["examples"][split] == 0:
                raise InputError(
                    f"the {split} split has no examples ({metadata['documents'][split]} "
                    f"document(s), {metadata['unused_documents'][split]} of them in shards "
                    "with a single document, which BERT cannot pair); add text, or raise "
                    "data.eval_fraction (held_out) or data.shard_mb")
        finish_dataset(incomplete, example_features(spec), lengths)
    except Exception as err:
        shutil.rmtree(incomplete, ignore_errors=True)
        errors = recorded_errors(data_dir)
        if errors and not isinstance(err, InputError):  # a runner's wrapping of the cause
            raise InputError("preparation stopped at bad input: " +
                             "; ".join(e["message"] for e in errors)) from err
        raise
    return metadata


def prepare_pretraining_data(data_cfg, model_cfg, workdir: str, seq_len: int,
                             max_predictions: int, is_main: bool = True,
                             barrier: Callable[[str], None] = lambda name: None
                             ) -> PretrainingData:
    if seq_len > model_cfg.max_len:
        raise ConfigError(f"data.seq_len ({seq_len}) exceeds model.max_len ({model_cfg.max_len})")
    _check_runner(data_cfg.prepare_runner)
    sources, weights = split_source_weights(list(data_cfg.sources))
    identity = [_source_identity(s) for s in sources]  # fails early on a missing file

    @functools.cache
    def shards() -> list[Shard]:
        return plan_shards(sources, data_cfg.document_split, data_cfg.tfds_data_dir or None,
                           data_cfg.shard_mb)

    tokenizer = obtain_tokenizer(data_cfg, model_cfg.vocab_size, shards, workdir, is_main,
                                 barrier)
    if tokenizer.vocab_size != model_cfg.vocab_size:
        raise ConfigError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but model.vocab_size is "
            f"{model_cfg.vocab_size}; set --config.model.vocab_size={tokenizer.vocab_size} "
            f"(tokenizer: {tokenizer_path(data_cfg, workdir)})")
    bert_options = {k: data_cfg[k] for k in ("short_seq_prob", "masked_lm_prob", "dupe_factor",
                                             "whole_word_mask")}
    spec = example_spec(data_cfg, model_cfg.family, tokenizer_path(data_cfg, workdir),
                        seq_len, max_predictions)
    root = data_cfg.prepared_dir or storage.join(workdir, "data")

    def prepare(part: list[str], part_identity: list) -> tuple[dict, dict]:
        """The examples of `part` (all sources, or one source of a mixture)."""
        key = fingerprint({
            "family": model_cfg.family, "sources": part_identity,
            "split": data_cfg.document_split, "eval_fraction": data_cfg.eval_fraction,
            "seed": data_cfg.seed, "seq_len": seq_len, "max_predictions": max_predictions,
            "bert": bert_options,
            "tokenizer": _tokenizer_identity(tokenizer_path(data_cfg, workdir)),
            "layout": _LAYOUT, "shard_mb": data_cfg.shard_mb,
            "skip_bad_shards": data_cfg.skip_bad_shards,
        })

        def build(data_dir: str) -> dict:
            plan = shards() if part == sources else plan_shards(
                part, data_cfg.document_split, data_cfg.tfds_data_dir or None,
                data_cfg.shard_mb)
            log.info("preparing %d shard(s) of %s with the %s runner", len(plan), part,
                     data_cfg.prepare_runner)
            # Beam workers read the tokenizer themselves: give them a local file.
            local_spec = dataclasses.replace(spec,
                                             tokenizer=storage.local_copy(spec.tokenizer))
            metadata = write_shard_examples(data_dir, local_spec, plan,
                                            data_cfg.prepare_runner, beam_settings(data_cfg))
            return {**metadata, "sources": part, "seq_len": seq_len}

        prepared, metadata = prepare_once(root, key, build, is_main, barrier)
        if is_main:
            report_skipped(metadata)
        return prepared, metadata

    if weights is None:
        prepared, metadata = prepare(sources, identity)
        return PretrainingData(tokenizer, prepared["train"], prepared["held_out"],
                               metadata["unigram_loss"], metadata)
    parts = [prepare([source], [ident]) for source, ident in zip(sources, identity)]
    mixture = [MixturePart(source, weight, prepared["train"], prepared["held_out"])
               for source, weight, (prepared, _) in zip(sources, weights, parts)]
    total = sum(weights)
    return PretrainingData(
        tokenizer, concatenated([p.train for p in mixture]),
        concatenated([p.held_out for p in mixture]),
        sum(w / total * metadata["unigram_loss"] for w, (_, metadata) in zip(weights, parts)),
        {"mixture": [{"source": s, "weight": w, **metadata}
                     for s, w, (_, metadata) in zip(sources, weights, parts)]},
        mixture)


def concatenated(sources: Sequence) -> object:
    """One random-access source holding `sources` one after another."""
    return grain.MapDataset.concatenate([grain.MapDataset.source(s) for s in sources])


def report_skipped(metadata: dict) -> None:
    """Log each bad source shard the dataset was prepared without, by name."""
    skipped = metadata.get("skipped_sources", [])
    for entry in skipped:
        log.warning("prepared without bad source shard %s: %s", entry["source"],
                    entry["reason"])
    if skipped:
        log.warning("%d source shard(s) skipped (data.skip_bad_shards=True); listed in "
                    "the prepared data's metadata.json", len(skipped))


def describe_plan(data_cfg, workdir: str) -> list[str]:
    """What `lmscale data prepare --dry-run` prints: the shard plan and the runner check,
    with nothing read beyond file sizes and record counts, and nothing written."""
    _check_runner(data_cfg.prepare_runner)
    plan = plan_shards(split_source_weights(list(data_cfg.sources))[0], data_cfg.document_split,
                       data_cfg.tfds_data_dir or None, data_cfg.shard_mb)
    files = [path for shard in plan for path in shard.files]
    other = sum(1 for shard in plan if not shard.files)
    lines = [f"{len(plan)} shard(s) (data.shard_mb={data_cfg.shard_mb:g}): {len(files)} "
             f"file(s), {sum(storage.size(p) for p in files) / 1e6:,.1f} MB"
             + (f", and {other} tfds or built-in shard(s)" if other else "")]
    if data_cfg.prepare_runner == "in_process":
        lines.append("runner: in_process (this process, shard after shard)")
    else:
        root = data_cfg.prepared_dir or storage.join(workdir, "data")
        lines += beam_prepare.check_settings(beam_settings(data_cfg), root)
    return lines
