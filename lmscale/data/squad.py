"""SQuAD v1.1: reading, the article split, windowed features and span post-processing.

Features follow google-research/bert `run_squad.py` (`convert_examples_to_features`,
`_check_is_max_context`, `write_predictions`) with one change of means, not of result:
answers are located through each tokenizer's character offsets rather than BERT's
whitespace tokens, so the same code serves SentencePiece and WordPiece and the predicted
text is cut from the original context instead of being re-aligned by `get_final_text`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmscale import storage
from lmscale.data.tokenizer import Tokenizer
from lmscale.errors import InputError

# MANIFEST.txt: the training set is not available offline, so the dev file is split by
# article (articles keep their questions together; no passage leaks across the split).
NUM_TRAIN_ARTICLES = 38

FEATURE_KEYS = ("input_ids", "token_type_ids", "attention_mask", "start_positions",
                "end_positions")


@dataclass(frozen=True)
class SquadDataset:
    version: str
    articles: list[dict[str, Any]]  # the file's `data`: articles -> paragraphs -> qas


@dataclass(frozen=True)
class SquadExample:
    qas_id: str
    question: str
    context: str
    answers: tuple[str, ...]  # every ground truth whose offset matches the context
    answer_start: int  # character offset of the first matching answer (the training label)


@dataclass
class SquadReadReport:
    """What reading kept and what it dropped, so no bad label passes silently."""

    questions: int = 0
    answers: int = 0
    mismatched_answers: int = 0  # `answer_start` does not point at the answer text
    skipped_questions: int = 0  # no answer left after dropping mismatched ones
    mismatched_ids: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line for logs; names a few offending question ids."""
        line = (f"{self.questions} questions, {self.answers} answers; "
                f"{self.mismatched_answers} answers whose answer_start does not match the "
                f"context dropped, {self.skipped_questions} questions left without an answer "
                "skipped")
        if self.mismatched_ids:
            line += f" (e.g. {', '.join(self.mismatched_ids[:5])})"
        return line


@dataclass(frozen=True)
class SquadFeatures:
    """One row per window; `arrays` holds the model inputs and labels for batching."""

    arrays: dict[str, np.ndarray]  # FEATURE_KEYS; int32, [features, seq] or [features]
    example_index: np.ndarray  # [features] int32: row of the example in the examples list
    token_char_spans: np.ndarray  # [features, seq, 2] int32 context char span; -1 elsewhere
    is_max_context: np.ndarray  # [features, seq] bool: this window scores the token best
    truncated_questions: int  # questions cut to max_query_length tokens
    answers_outside_window: int  # windows labelled [CLS] because the answer is not inside

    def __len__(self) -> int:
        return len(self.example_index)


def read_json_file(path: str, what: str) -> Any:
    """Parse a JSON file, turning a missing file or bad JSON into an InputError."""
    if not storage.isfile(path):
        raise InputError(f"{what} file {path!r} does not exist; check the path")
    try:
        with storage.open_text(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{what} file {path!r} is not valid JSON: {err}") from err


def read_squad_file(path: str) -> SquadDataset:
    """A SQuAD v1.1 JSON file; checks the articles -> paragraphs -> qas layout."""
    data = read_json_file(path, "SQuAD")
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise InputError(
            f"SQuAD file {path!r} must be a JSON object with a 'data' list of articles "
            "(the SQuAD v1.1 format); is this a predictions file?"
        )
    for a, article in enumerate(data["data"]):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise InputError(f"SQuAD file {path!r}: article {a} has no 'paragraphs' list")
        for p, paragraph in enumerate(paragraphs):
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("context"), str) \
                    or not isinstance(paragraph.get("qas"), list):
                raise InputError(f"SQuAD file {path!r}: article {a} paragraph {p} needs a "
                                 "'context' string and a 'qas' list")
            for qa in paragraph["qas"]:
                if not isinstance(qa, dict) or not {"id", "question", "answers"} <= qa.keys():
                    raise InputError(f"SQuAD file {path!r}: article {a} paragraph {p} has a "
                                     "question without 'id', 'question' and 'answers'")
    return SquadDataset(version=str(data.get("version", "")), articles=data["data"])


def split_articles(
    articles: Sequence[Mapping[str, Any]], num_train: int = NUM_TRAIN_ARTICLES
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """(train, eval) articles: `articles[:num_train]` and `articles[num_train:]`."""
    if not 0 < num_train < len(articles):
        raise InputError(f"cannot split {len(articles)} articles with {num_train} for "
                         f"training; choose 0 < num_train < {len(articles)}")
    return list(articles[:num_train]), list(articles[num_train:])


def squad_examples(
    articles: Sequence[Mapping[str, Any]],
) -> tuple[list[SquadExample], SquadReadReport]:
    """Flatten articles into examples; answers whose offset is wrong are counted and dropped.

    `run_squad.py` skips a training answer it cannot find in the context ("Could not find
    answer"); we do the same for any answer where `context[start:start+len(text)]` is not
    the text, and skip a question only when none of its answers is usable.
    """
    examples: list[SquadExample] = []
    report = SquadReadReport()
    for article in articles:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            for qa in paragraph["qas"]:
                report.questions += 1
                answers, starts = [], []
                for answer in qa["answers"]:
                    report.answers += 1
                    text, start = answer.get("text"), answer.get("answer_start")
                    if isinstance(text, str) and isinstance(start, int) and text \
                            and context[start:start + len(text)] == text:
                        answers.append(text)
                        starts.append(start)
                    else:
                        report.mismatched_answers += 1
                        report.mismatched_ids.append(str(qa["id"]))
                if not answers:
                    report.skipped_questions += 1
                    continue
                examples.append(SquadExample(
                    qas_id=str(qa["id"]), question=qa["question"], context=context,
                    answers=tuple(answers), answer_start=starts[0]))
    return examples, report


def _doc_windows(num_tokens: int, max_tokens: int, doc_stride: int) -> list[tuple[int, int]]:
    """(start, length) windows over the context tokens, as `run_squad.py`'s doc_spans.

    Each window starts `min(length, doc_stride)` after the last; an empty context still
    gets one (empty) window so its question receives a prediction.
    """
    windows = []
    start = 0
    while True:
        length = min(num_tokens - start, max_tokens)
        windows.append((start, length))
        if start + length >= num_tokens:
            return windows
        start += min(length, doc_stride)


def _max_context_windows(windows: list[tuple[int, int]], num_tokens: int) -> np.ndarray:
    """`_check_is_max_context` for every token at once: `[num_tokens]` best window index.

    Score = min(left, right context) + 0.01 * window length; the first best window wins.
    """
    position = np.arange(num_tokens)
    best_score = np.full(num_tokens, -1.0)
    best_window = np.full(num_tokens, -1)
    for index, (start, length) in enumerate(windows):
        end = start + length - 1
        score = np.minimum(position - start, end - position) + 0.01 * length
        better = (position >= start) & (position <= end) & (score > best_score)
        best_score[better] = score[better]
        best_window[better] = index
    return best_window


def _answer_token_span(
    offsets: Sequence[tuple[int, int]], char_start: int, char_end: int
) -> tuple[int, int] | None:
    """First and last token overlapping characters [char_start, char_end).

    A zero-width token (one byte of a byte-fallback character) counts when it sits inside.
    """
    inside = [i for i, (s, e) in enumerate(offsets)
              if max(s, char_start) < min(e, char_end) or (s == e and char_start <= s < char_end)]
    return (inside[0], inside[-1]) if inside else None


def build_squad_features(
    examples: Sequence[SquadExample],
    tokenizer: Tokenizer,
    max_seq_length: int = 384,
    doc_stride: int = 128,
    max_query_length: int = 64,
) -> SquadFeatures:
    """`[CLS] question [SEP] context [SEP]` windows with start/end labels, padded.

    Defaults are the BERT paper's SQuAD settings. A window that does not contain the whole
    answer is labelled start = end = 0 ([CLS]), as `run_squad.py` does for training.
    """
    for name in ("cls_id", "sep_id", "pad_id"):
        if getattr(tokenizer, name) is None:
            raise InputError(f"SQuAD features need a tokenizer with {name} set; this one has "
                             "no such special token (train it with lmscale's special tokens)")
    max_doc_tokens = max_seq_length - max_query_length - 3
    if max_doc_tokens <= 0 or doc_stride <= 0:
        raise InputError(f"max_seq_length {max_seq_length} leaves no room for context after a "
                         f"{max_query_length}-token question and 3 special tokens (or "
                         f"doc_stride {doc_stride} <= 0); raise max_seq_length")

    rows: dict[str, list] = {key: [] for key in FEATURE_KEYS}
    example_index, char_spans, max_context = [], [], []
    truncated = outside = 0
    doc_cache: dict[str, tuple[list[int], list[tuple[int, int]]]] = {}
    for ex_index, example in enumerate(examples):
        query = tokenizer.encode(example.question)
        if len(query) > max_query_length:
            truncated += 1
            query = query[:max_query_length]
        if example.context not in doc_cache:  # SQuAD asks ~5 questions per paragraph
            doc_cache.clear()
            doc_cache[example.context] = tokenizer.encode_with_offsets(example.context)
        doc_ids, doc_offsets = doc_cache[example.context]
        answer = _answer_token_span(doc_offsets, example.answer_start,
                                    example.answer_start + len(example.answers[0]))
        windows = _doc_windows(len(doc_ids), max_seq_length - len(query) - 3, doc_stride)
        best_window = _max_context_windows(windows, len(doc_ids))
        offsets = np.asarray(doc_offsets, np.int32).reshape(-1, 2)
        doc_offset = len(query) + 2  # position of the first context token in the window
        for w_index, (w_start, w_length) in enumerate(windows):
            ids = [tokenizer.cls_id, *query, tokenizer.sep_id,
                   *doc_ids[w_start:w_start + w_length], tokenizer.sep_id]
            n = len(ids)
            pad = max_seq_length - n
            rows["input_ids"].append(ids + [tokenizer.pad_id] * pad)
            rows["token_type_ids"].append([0] * doc_offset + [1] * (n - doc_offset) + [0] * pad)
            rows["attention_mask"].append([1] * n + [0] * pad)

            spans = np.full((max_seq_length, 2), -1, np.int32)
            spans[doc_offset:doc_offset + w_length] = offsets[w_start:w_start + w_length]
            is_max = np.zeros(max_seq_length, bool)
            is_max[doc_offset:doc_offset + w_length] = \
                best_window[w_start:w_start + w_length] == w_index
            char_spans.append(spans)
            max_context.append(is_max)

            if answer is not None and w_start <= answer[0] and answer[1] < w_start + w_length:
                start, end = answer[0] - w_start + doc_offset, answer[1] - w_start + doc_offset
            else:
                start = end = 0
                outside += 1
            rows["start_positions"].append(start)
            rows["end_positions"].append(end)
            example_index.append(ex_index)

    seq_shape = (-1, max_seq_length)
    arrays = {key: np.asarray(value, np.int32).reshape(
        (-1,) if key.endswith("positions") else seq_shape) for key, value in rows.items()}
    return SquadFeatures(
        arrays=arrays,
        example_index=np.asarray(example_index, np.int32),
        token_char_spans=np.asarray(char_spans, np.int32).reshape(-1, max_seq_length, 2),
        is_max_context=np.asarray(max_context, bool).reshape(seq_shape),
        truncated_questions=truncated,
        answers_outside_window=outside,
    )


def postprocess_squad_predictions(
    examples: Sequence[SquadExample],
    features: SquadFeatures,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    n_best_size: int = 20,
    max_answer_length: int = 30,
) -> dict[str, str]:
    """`{question_id: answer_text}` from per-window logits `[features, seq]`.

    As `run_squad.py`'s `write_predictions`: per window, pair the n_best_size highest start
    and end logits; keep spans with both ends on context tokens, the start in its max-context
    window, end >= start and at most max_answer_length tokens; the best start + end logit
    across all windows of the passage wins (ties: earlier window, then higher-ranked start,
    then end). The text is cut from the original context by character offsets. A question
    with no valid span gets "" (BERT writes "empty"; both score 0).
    """
    start_logits = np.asarray(start_logits, np.float32)
    end_logits = np.asarray(end_logits, np.float32)
    if start_logits.shape != features.is_max_context.shape or \
            end_logits.shape != start_logits.shape:
        raise InputError(f"logits of shape {start_logits.shape}/{end_logits.shape} do not "
                         f"match the features {features.is_max_context.shape}")
    best: dict[int, tuple[float, int, int, int]] = {}  # example -> (score, feature, start, end)
    for f_index, ex_index in enumerate(features.example_index.tolist()):
        in_context = features.token_char_spans[f_index, :, 0] >= 0
        # A stable sort keeps the lower position first on ties, as `_get_best_indexes`.
        starts = np.argsort(-start_logits[f_index], kind="stable")[:n_best_size]
        ends = np.argsort(-end_logits[f_index], kind="stable")[:n_best_size]
        s, e = starts[:, None], ends[None, :]
        valid = (features.is_max_context[f_index][s] & in_context[e]
                 & (e >= s) & (e - s + 1 <= max_answer_length))
        candidates = np.flatnonzero(valid)  # in (start rank, end rank) order
        if len(candidates) == 0:
            continue
        scores = (start_logits[f_index][s] + end_logits[f_index][e]).ravel()[candidates]
        flat = int(candidates[np.argmax(scores)])  # the first maximum wins ties
        score = float(scores.max())
        if ex_index not in best or score > best[ex_index][0]:
            i, j = divmod(flat, len(ends))
            best[ex_index] = (score, f_index, int(starts[i]), int(ends[j]))

    predictions = {}
    for ex_index, example in enumerate(examples):
        if ex_index not in best:
            predictions[example.qas_id] = ""
            continue
        _, f_index, start, end = best[ex_index]
        char_start = features.token_char_spans[f_index, start, 0]
        char_end = features.token_char_spans[f_index, end, 1]
        # SentencePiece pieces carry their leading space in the offsets.
        predictions[example.qas_id] = example.context[char_start:char_end].strip()
    return predictions
