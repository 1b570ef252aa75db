"""`lmscale finetune squad`: BERT on SQuAD v1.1 span extraction (BERT section 4.2).

Features, post-processing and the metric are those of `lmscale.data.squad` and
`lmscale.tasks.squad_metric`; this module assembles the recipe: read and split the data,
fine-tune on the shared driver, predict start/end logits for the held-out passages, and
write `predictions.json` (official format) and `eval.json` (official EM/F1).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ml_collections

from lmscale import storage
from lmscale.data.squad import (
    SquadExample,
    SquadFeatures,
    build_squad_features,
    postprocess_squad_predictions,
    read_squad_file,
    split_articles,
    squad_examples,
)
from lmscale.data.tokenizer import Tokenizer
from lmscale.errors import InputError
from lmscale.models.bert_heads import BertForQuestionAnswering
from lmscale.tasks.encoder import (
    Trained, load_encoder, logged_throughput, predict, train_encoder,
)
from lmscale.tasks.finetuning import set_step_budget
from lmscale.tasks.objectives import SpanObjective
from lmscale.tasks.squad_metric import evaluate_squad
from lmscale.train.defaults import finetune_config

log = logging.getLogger(__name__)


def squad_task_config() -> ml_collections.ConfigDict:
    """The `task` section: BERT's SQuAD settings (google-research/bert `run_squad.py`)."""
    t = ml_collections.ConfigDict()
    t.data = "../shared/data/squad/dev-v1.1.json"
    t.eval_data = ""  # "" = hold out the articles of `data` after num_train_articles
    t.num_train_articles = 38  # MANIFEST.txt: dev articles 1-38 train, 39-48 evaluate
    t.max_eval_articles = 0  # evaluate on the first K held-out articles (0 = all)
    t.max_seq_length = 384
    t.doc_stride = 128
    t.max_query_length = 64
    t.n_best_size = 20
    t.max_answer_length = 30
    t.warmup_fraction = 0.1
    t.predict_batch_size = 64
    t.tokenizer = ""  # only when init.checkpoint is empty (training from scratch)
    return t


def squad_template(model_preset: str = "bert-base") -> ml_collections.ConfigDict:
    """Every key a SQuAD config may have (the CLI validates config files against it)."""
    c = finetune_config(model_preset)
    c.task = squad_task_config()
    return c


def first_sentence(context: str) -> str:
    """The trivial baseline's answer: the passage up to its first sentence end."""
    match = re.search(r"[.!?](\s|$)", context)
    return context[: match.end()].strip() if match else context.strip()


def baseline_scores(articles: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """EM/F1 of answering every question with the first sentence of its passage."""
    predictions = {qa["id"]: first_sentence(p["context"])
                   for a in articles for p in a["paragraphs"] for qa in p["qas"]}
    return evaluate_squad(articles, predictions, warn_unanswered=False)


def _articles(task: ml_collections.ConfigDict):
    train_set = read_squad_file(task.data)
    if task.eval_data:
        train, held_out = train_set.articles, read_squad_file(task.eval_data).articles
    else:
        train, held_out = split_articles(train_set.articles, task.num_train_articles)
    if task.max_eval_articles:
        held_out = held_out[: task.max_eval_articles]
    return train, held_out


def _examples(articles, what: str) -> list[SquadExample]:
    examples, report = squad_examples(articles)
    log.info("SQuAD %s: %s", what, report.describe())
    if report.mismatched_answers:
        log.warning("SQuAD %s: %d answers do not match their context and were dropped "
                    "(not trained on); see the ids above", what, report.mismatched_answers)
    if not examples:
        raise InputError(f"the SQuAD {what} data has no usable question")
    return examples


@dataclass(frozen=True)
class SquadData:
    eval_articles: list
    train_examples: list[SquadExample]
    eval_examples: list[SquadExample]
    train_features: SquadFeatures
    eval_features: SquadFeatures


def prepare_squad(task: ml_collections.ConfigDict, tokenizer: Tokenizer) -> SquadData:
    """Read, split and window the training and evaluation questions."""
    train_articles, eval_articles = _articles(task)
    train_examples = _examples(train_articles, "training")
    eval_examples = _examples(eval_articles, "evaluation")
    options = dict(max_seq_length=task.max_seq_length, doc_stride=task.doc_stride,
                   max_query_length=task.max_query_length)
    train_features = build_squad_features(train_examples, tokenizer, **options)
    eval_features = build_squad_features(eval_examples, tokenizer, **options)
    log.info("SQuAD features: %d training windows from %d questions (%d questions cut to "
             "%d tokens); %d evaluation windows from %d questions", len(train_features),
             len(train_examples), train_features.truncated_questions, task.max_query_length,
             len(eval_features), len(eval_examples))
    return SquadData(eval_articles, train_examples, eval_examples, train_features,
                     eval_features)


def score_params(model: BertForQuestionAnswering, trained: Trained, params, data: SquadData,
                 task: ml_collections.ConfigDict) -> tuple[dict[str, str], dict[str, float]]:
    """(predictions, official EM/F1) of `params` on the evaluation articles."""
    start_logits, end_logits = predict(model, trained.result, params,
                                       data.eval_features.arrays, task.predict_batch_size)
    predictions = postprocess_squad_predictions(
        data.eval_examples, data.eval_features, start_logits, end_logits, task.n_best_size,
        task.max_answer_length)
    return predictions, evaluate_squad(data.eval_articles, predictions, warn_unanswered=False)


@dataclass(frozen=True)
class SquadOutcome:
    summary: dict
    data: SquadData
    model: BertForQuestionAnswering
    trained: Trained


def run_squad(config: ml_collections.ConfigDict, workdir: str) -> SquadOutcome:
    """Fine-tune, predict the held-out articles and score them; the summary is also
    written to `workdir/summary.json`."""
    task = config.task
    encoder = load_encoder(config)
    data = prepare_squad(task, encoder.tokenizer)
    set_step_budget(config, len(data.train_features))
    model = BertForQuestionAnswering(encoder.config)
    trained = train_encoder(SpanObjective(model), data.train_features.arrays,
                            data.eval_features.arrays, encoder, config, workdir)
    start = time.perf_counter()
    predictions, scores = score_params(model, trained, trained.result.state.params, data, task)
    predict_seconds = time.perf_counter() - start
    storage.write_json(storage.join(workdir, "predictions.json"), predictions)
    storage.write_json(storage.join(workdir, "eval.json"), scores)
    summary = {
        **scores,
        "baseline_first_sentence": baseline_scores(data.eval_articles),
        "stopped": trained.result.stopped,
        "steps": int(trained.result.state.step),
        "batch_size": config.train.batch_size,
        "train_windows": len(data.train_features),
        "eval_questions": len(data.eval_examples),
        "eval_windows": len(data.eval_features),
        "train_seconds": trained.train_seconds,
        "predict_seconds": predict_seconds,
        **logged_throughput(workdir, task.max_seq_length),
        "new_parameters": trained.result.new_params,
    }
    storage.write_json(storage.join(workdir, "summary.json"), summary)
    return SquadOutcome(summary, data, model, trained)
