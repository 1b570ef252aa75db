"""`lmscale finetune classify`: BERT sentence (or sentence-pair) classification from the
pooled [CLS] vector (BERT section 4.1), e.g. SST-2.

Input: a TSV file with a header row, a JSONL file (one object per line), or
`tfds:NAME[:SPLIT]` (e.g. `tfds:glue/sst2:validation`, read with `tfds.data_source`). The
text and label columns are named in the config. Evaluation runs once per epoch through the
shared loop (loss and accuracy in metrics.jsonl) and at the end (eval.json: accuracy, and
F1 of the second label for binary tasks).
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import ml_collections
import numpy as np

from lmscale import storage
from lmscale.data.tokenizer import Tokenizer
from lmscale.errors import ConfigError, InputError
from lmscale.models.bert_heads import BertForSequenceClassification
from lmscale.tasks.encoder import (
    load_encoder, logged_throughput, predict, train_encoder,
)
from lmscale.tasks.finetuning import set_step_budget
from lmscale.tasks.objectives import ClassificationObjective
from lmscale.train.defaults import finetune_config

log = logging.getLogger(__name__)


def classify_task_config() -> ml_collections.ConfigDict:
    t = ml_collections.ConfigDict()
    t.train_data = "../shared/data/sst2/train.tsv"
    t.eval_data = "../shared/data/sst2/glue_dev.tsv"  # GLUE dev, held out (MANIFEST.txt)
    t.text_fields = ["sentence"]  # one field, or two for sentence pairs
    t.label_field = "label"
    t.labels = []  # label strings in class order; [] = sorted labels of the training data
    t.max_seq_length = 128
    t.max_train_examples = 0  # 0 = all
    t.max_eval_examples = 0
    t.warmup_fraction = 0.1
    t.predict_batch_size = 64
    t.tokenizer = ""  # only when init.checkpoint is empty (training from scratch)
    return t


def classify_template(model_preset: str = "bert-base") -> ml_collections.ConfigDict:
    """Every key a classification config may have (the CLI validates config files)."""
    c = finetune_config(model_preset)
    c.task = classify_task_config()
    return c


@dataclass(frozen=True)
class LabelledTexts:
    texts: list[tuple[str, ...]]  # one or two segments per example
    labels: list[str]
    source: str


def _tfds_rows(spec: str) -> list[dict]:
    name, _, split = spec.removeprefix("tfds:").partition(":")
    try:
        import tensorflow_datasets as tfds

        source = tfds.data_source(name, split=split or "train")
    except Exception as err:  # noqa: BLE001 - TFDS raises many types for missing data
        raise InputError(f"cannot read {spec!r} through tfds.data_source ({err}); prepare it "
                         "once with `tfds build` in array_record format") from err
    return [dict(row) for row in source]


def _file_rows(path: str) -> list[dict]:
    if not storage.isfile(path):
        raise InputError(f"classification file {path!r} does not exist")
    with storage.open_text(path) as f:
        if path.endswith((".jsonl", ".json")):
            rows = []
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise InputError(f"{path}:{number}: not a JSON object ({err})") from err
            return rows
        # QUOTE_NONE: GLUE's TSVs hold bare quote characters inside sentences.
        csv.field_size_limit(sys.maxsize)
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def read_labelled_texts(spec: str, text_fields: Sequence[str], label_field: str,
                        limit: int = 0) -> LabelledTexts:
    """Texts and label strings from a TSV/JSONL file or `tfds:NAME[:SPLIT]`."""
    rows = _tfds_rows(spec) if spec.startswith("tfds:") else _file_rows(spec)
    if limit:
        rows = rows[:limit]
    if not rows:
        raise InputError(f"{spec!r} holds no examples")
    needed = [*text_fields, label_field]
    texts, labels = [], []
    for number, row in enumerate(rows, 1):
        missing = [k for k in needed if row.get(k) is None]
        if missing:
            raise InputError(f"{spec!r} example {number} lacks {missing}; it has "
                             f"{sorted(row)} (set task.text_fields / task.label_field)")
        texts.append(tuple(_text(row[k]) for k in text_fields))
        labels.append(_text(row[label_field]).strip())
    return LabelledTexts(texts, labels, spec)


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def label_ids(data: LabelledTexts, labels: Sequence[str]) -> np.ndarray:
    """Class index of every example; a label outside `labels` is an error that names it."""
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted(set(data.labels) - index.keys())
    if unknown:
        first = data.labels.index(unknown[0]) + 1
        raise InputError(f"{data.source!r} has labels {unknown} (first at example {first}) "
                         f"outside the known labels {list(labels)}; fix the file or set "
                         "task.labels")
    return np.asarray([index[label] for label in data.labels], np.int32)


def encode_texts(texts: Sequence[tuple[str, ...]], tokenizer: Tokenizer,
                 max_seq_length: int) -> dict[str, np.ndarray]:
    """`[CLS] a [SEP] (b [SEP])`, padded; pairs are truncated longest-first, as BERT's
    `_truncate_seq_pair`."""
    n = len(texts)
    arrays = {k: np.zeros((n, max_seq_length), np.int32)
              for k in ("input_ids", "token_type_ids", "attention_mask")}
    arrays["input_ids"][:] = tokenizer.pad_id
    for row, segments in enumerate(texts):
        pieces = [tokenizer.encode(s) for s in segments]
        budget = max_seq_length - 1 - len(pieces)  # [CLS] and one [SEP] per segment
        while sum(map(len, pieces)) > budget:
            longest = max(pieces, key=len)
            longest.pop()
        ids, types = [tokenizer.cls_id], [0]
        for segment, piece in enumerate(pieces):
            ids += [*piece, tokenizer.sep_id]
            types += [segment] * (len(piece) + 1)
        arrays["input_ids"][row, : len(ids)] = ids
        arrays["token_type_ids"][row, : len(ids)] = types
        arrays["attention_mask"][row, : len(ids)] = 1
    return arrays


def classification_scores(predicted: np.ndarray, gold: np.ndarray,
                          num_labels: int) -> dict[str, float]:
    """Accuracy in percent; for two labels also F1 of label 1 (GLUE's binary F1)."""
    scores = {"accuracy": 100.0 * float(np.mean(predicted == gold)), "examples": len(gold)}
    if num_labels == 2:
        tp = float(np.sum((predicted == 1) & (gold == 1)))
        precision = tp / max(float(np.sum(predicted == 1)), 1.0)
        recall = tp / max(float(np.sum(gold == 1)), 1.0)
        scores["f1"] = 100.0 * (2 * precision * recall / (precision + recall)
                                if precision + recall else 0.0)
    return scores


def run_classify(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Fine-tune, evaluate each epoch and at the end; returns (and writes) the summary."""
    task = config.task
    if len(task.text_fields) not in (1, 2):
        raise ConfigError("task.text_fields names one text field or two (sentence pairs)")
    encoder = load_encoder(config)
    train = read_labelled_texts(task.train_data, task.text_fields, task.label_field,
                                task.max_train_examples)
    held_out = read_labelled_texts(task.eval_data, task.text_fields, task.label_field,
                                   task.max_eval_examples)
    labels = list(task.labels) or sorted(set(train.labels))
    if len(labels) < 2:
        raise InputError(f"{train.source!r} has only the label {labels}; a classifier needs "
                         "two or more")
    train_arrays = encode_texts(train.texts, encoder.tokenizer, task.max_seq_length)
    train_arrays["labels"] = label_ids(train, labels)
    eval_arrays = encode_texts(held_out.texts, encoder.tokenizer, task.max_seq_length)
    eval_arrays["labels"] = label_ids(held_out, labels)
    log.info("classification: %d training / %d evaluation examples, labels %s",
             len(train.labels), len(held_out.labels), labels)

    set_step_budget(config, len(train.labels))
    steps_per_epoch = max(1, len(train.labels) // config.train.batch_size)
    if not config.train.eval_every:  # evaluate once per epoch
        config.train.eval_every = steps_per_epoch
        config.train.eval_batches = max(1, len(held_out.labels) // config.train.batch_size)
    model = BertForSequenceClassification(encoder.config, num_labels=len(labels))
    trained = train_encoder(ClassificationObjective(model), train_arrays, eval_arrays, encoder,
                            config, workdir)
    logits = predict(model, trained.result, trained.result.state.params, eval_arrays,
                     task.predict_batch_size)
    predicted = np.argmax(logits, axis=-1)
    scores = classification_scores(predicted, eval_arrays["labels"], len(labels))
    storage.write_json(storage.join(workdir, "predictions.json"), [labels[i] for i in predicted])
    storage.write_json(storage.join(workdir, "eval.json"), scores)
    summary = {
        **scores,
        "majority_class_accuracy": 100.0 * float(np.max(np.bincount(
            eval_arrays["labels"], minlength=len(labels))) / len(held_out.labels)),
        "labels": labels,
        "stopped": trained.result.stopped,
        "steps": int(trained.result.state.step),
        "batch_size": config.train.batch_size,
        "train_seconds": trained.train_seconds,
        **logged_throughput(workdir, task.max_seq_length),
        "new_parameters": trained.result.new_params,
    }
    storage.write_json(storage.join(workdir, "summary.json"), summary)
    return summary
