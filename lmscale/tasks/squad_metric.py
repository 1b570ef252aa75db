"""SQuAD v1.1 exact match and F1, defined exactly as the official evaluation script.

The official `evaluate-v1.1.py` (Rajpurkar et al. 2016) normalises both strings (lower
case, drop punctuation, drop the articles a/an/the, collapse white space), scores token F1
from the bag-of-tokens overlap, takes the best score over all ground truths, counts a
question missing from the predictions as 0, and reports percentages. Every step below
keeps its behaviour, including the "Unanswered question" message on stderr, so our
numbers are comparable with published ones.
"""

from __future__ import annotations

import re
import string
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lmscale.data.squad import read_json_file, read_squad_file
from lmscale.errors import InputError

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower case, remove punctuation, articles and extra white space (official order)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match_score(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score(prediction: str, ground_truth: str) -> float:
    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(ground_truth_tokens)
    return 2 * precision * recall / (precision + recall)


def _max_over_ground_truths(
    metric: Callable[[str, str], float], prediction: str, ground_truths: Sequence[str]
) -> float:
    return max(metric(prediction, truth) for truth in ground_truths)


def evaluate_squad(
    articles: Sequence[Mapping[str, Any]],
    predictions: Mapping[str, str],
    warn_unanswered: bool = True,
) -> dict[str, float]:
    """`{"exact_match", "f1"}` in percent over every question of `articles`.

    `articles` is the `data` list of a SQuAD v1.1 file (or a slice of it, such as the
    evaluation articles of our split). Predictions for questions not in `articles` are
    ignored, as in the official script.
    """
    exact_match = f1 = 0.0
    total = 0
    for article in articles:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                if qa["id"] not in predictions:
                    if warn_unanswered:
                        print(f"Unanswered question {qa['id']} will receive score 0.",
                              file=sys.stderr)
                    continue
                ground_truths = [answer["text"] for answer in qa["answers"]]
                prediction = predictions[qa["id"]]
                exact_match += _max_over_ground_truths(exact_match_score, prediction, ground_truths)
                f1 += _max_over_ground_truths(f1_score, prediction, ground_truths)
    if total == 0:
        raise InputError("the SQuAD data holds no questions; nothing to evaluate")
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


def read_predictions_file(path: str) -> dict[str, str]:
    """A predictions file in the official format: one JSON object `{question_id: text}`."""
    predictions = read_json_file(path, "predictions")
    if not isinstance(predictions, dict):
        raise InputError(
            f"predictions file {path!r} must hold one JSON object mapping question id to "
            f"answer text, got a JSON {type(predictions).__name__}"
        )
    for qid, text in predictions.items():
        if not isinstance(text, str):
            raise InputError(
                f"predictions file {path!r}: the answer for question {qid!r} is "
                f"{text!r}; every answer must be a string (use \"\" for no answer)"
            )
    return predictions


def evaluate_squad_file(dataset_file: str, predictions_file: str) -> dict[str, float]:
    """Score a predictions file against a SQuAD v1.1 file, as `evaluate-v1.1.py` does."""
    dataset = read_squad_file(dataset_file)
    if dataset.version != "1.1":
        # The official script warns and carries on.
        print(f"Evaluation expects v-1.1, but got dataset with v-{dataset.version}",
              file=sys.stderr)
    predictions = read_predictions_file(predictions_file)
    return evaluate_squad(dataset.articles, predictions)
