"""BERT MLM + NSP examples, measured over many examples built from real Shakespeare."""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np
import pytest

from lmscale.data.bert_pretrain import (
    BertPretrainingOptions,
    create_pretraining_examples,
    split_sentences,
)
from lmscale.data.tokenizer import (
    SentencePieceTokenizer,
    TokenizerTrainSpec,
    train_sentencepiece,
)
from lmscale.errors import ConfigError, InputError

# <repo>/../shared/data/text/openshakespeare
SHAKESPEARE = os.path.join(
    os.path.dirname(__file__), "../../../shared/data/text/openshakespeare"
)
PLAYS = ("macbeth", "tempest", "othello", "julius_caesar")
OPTIONS = BertPretrainingOptions(max_seq_length=64, dupe_factor=1, seed=0)


@pytest.fixture(scope="module")
def plays() -> list[str]:
    paths = [os.path.join(SHAKESPEARE, f"{name}_gut.txt") for name in PLAYS]
    if not all(os.path.isfile(path) for path in paths):
        pytest.skip(f"Shakespeare texts not found under {os.path.abspath(SHAKESPEARE)}")
    texts = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            texts.append(f.read())
    return texts


@pytest.fixture(scope="module")
def tokenizer(plays, tmp_path_factory) -> SentencePieceTokenizer:
    path = os.path.join(SHAKESPEARE, f"{PLAYS[0]}_gut.txt")
    prefix = str(tmp_path_factory.mktemp("spm") / "spm")
    return SentencePieceTokenizer(
        train_sentencepiece(TokenizerTrainSpec(inputs=(path,), vocab_size=1000), prefix)
    )


@pytest.fixture(scope="module")
def examples(plays, tokenizer) -> dict[str, np.ndarray]:
    return create_pretraining_examples(plays, tokenizer, OPTIONS)


@pytest.fixture(scope="module")
def wwm_examples(plays, tokenizer) -> dict[str, np.ndarray]:
    options = dataclasses.replace(OPTIONS, whole_word_mask=True)
    return create_pretraining_examples(plays, tokenizer, options)


def _special(tok) -> set[int]:
    return {tok.cls_id, tok.sep_id, tok.mask_id, tok.pad_id, tok.eot_id}


def _selected(ex: dict[str, np.ndarray], row: int) -> np.ndarray:
    return ex["masked_lm_positions"][row][ex["masked_lm_weights"][row] > 0]


def _original(ex: dict[str, np.ndarray], row: int) -> np.ndarray:
    """The unmasked tokens of a row: input_ids with masked_lm_ids put back."""
    ids = ex["input_ids"][row][: ex["attention_mask"][row].sum()].copy()
    weights = ex["masked_lm_weights"][row] > 0
    ids[ex["masked_lm_positions"][row][weights]] = ex["masked_lm_ids"][row][weights]
    return ids


def _segments(ex: dict[str, np.ndarray], row: int) -> tuple[list[int], list[int]]:
    ids = _original(ex, row)
    a_end = int((ex["token_type_ids"][row][: len(ids)] == 0).sum()) - 1  # A's [SEP]
    return ids[1:a_end].tolist(), ids[a_end + 1 : -1].tolist()


def _as_text(ids) -> str:
    return " " + " ".join(map(str, ids)) + " "


def test_split_sentences():
    text = "Hello there. How are you?\nFine!  Yes\n\n  \n3.5 apples... Enough"
    assert split_sentences(text) == [
        "Hello there.",
        "How are you?",
        "Fine!",
        "Yes",
        "3.5 apples...",
        "Enough",
    ]


def test_structure_cls_a_sep_b_sep(examples, tokenizer):
    ex, length = examples, OPTIONS.max_seq_length
    assert len(ex["input_ids"]) > 1000
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert (
            ex[key].shape == (len(ex["input_ids"]), length)
            and ex[key].dtype == np.int32
        )
    assert ex["masked_lm_weights"].dtype == np.float32
    lengths = ex["attention_mask"].sum(1)
    assert lengths.max() == length and lengths.min() >= 5
    for row, n in enumerate(lengths):
        ids, types = ex["input_ids"][row], ex["token_type_ids"][row]
        assert (ex["attention_mask"][row] == (np.arange(length) < n)).all()
        assert (ids[n:] == tokenizer.pad_id).all() and (types[n:] == 0).all()
        seps = np.flatnonzero(ids[:n] == tokenizer.sep_id)
        assert ids[0] == tokenizer.cls_id and (ids[1:n] != tokenizer.cls_id).all()
        assert len(seps) == 2 and seps[1] == n - 1 and 1 < seps[0] < n - 2
        assert (types[: seps[0] + 1] == 0).all() and (types[seps[0] + 1 : n] == 1).all()


def test_masked_ids_reconstruct_actual_text(examples, plays, tokenizer):
    """Putting masked_lm_ids back gives segments that really occur in the documents; an
    actual-next B follows its A in the same document."""
    streams = []
    for play in plays:
        ids = [tokenizer.encode(s) for s in split_sentences(play)]
        streams.append(_as_text(t for sentence in ids for t in sentence))
    for row, label in enumerate(examples["next_sentence_label"][:1000]):
        a, b = map(_as_text, _segments(examples, row))
        a_docs = [d for d, stream in enumerate(streams) if a in stream]
        b_docs = [d for d, stream in enumerate(streams) if b in stream]
        assert a_docs and b_docs, f"row {row} is not text from the documents"
        if label == 0:
            assert any(
                streams[d].find(b, streams[d].find(a) + len(a) - 1) >= 0 for d in a_docs
            )


def test_selection_rate_and_cap(examples, plays, tokenizer):
    ex = examples
    lengths = ex["attention_mask"].sum(1)
    counts = (ex["masked_lm_weights"] > 0).sum(1)
    # As the original: round(15% of all tokens, [CLS]/[SEP] included), at least 1, capped.
    expected = np.minimum(
        OPTIONS.max_predictions_per_seq,
        np.maximum(1, [round(n * 0.15) for n in lengths]),
    )
    assert (counts == expected).all()
    assert abs(counts.sum() / lengths.sum() - 0.15) < 0.01
    capped = create_pretraining_examples(
        plays, tokenizer, dataclasses.replace(OPTIONS, max_predictions_per_seq=3)
    )
    capped_counts = (capped["masked_lm_weights"] > 0).sum(1)
    assert capped_counts.max() == 3 and (capped_counts == 3).mean() > 0.9


def test_80_10_10_and_specials_never_masked(examples, tokenizer):
    ex, special = examples, _special(tokenizer)
    as_mask = as_original = as_random = 0
    for row in range(len(ex["input_ids"])):
        positions = _selected(ex, row)
        labels = ex["masked_lm_ids"][row][: len(positions)]
        assert (np.diff(positions) > 0).all() and (positions > 0).all()
        assert (positions < ex["attention_mask"][row].sum() - 1).all()
        assert not special & set(labels.tolist())  # never [CLS]/[SEP]/[PAD]
        assert (ex["masked_lm_positions"][row][len(positions) :] == 0).all()
        shown = ex["input_ids"][row][positions]
        as_mask += (shown == tokenizer.mask_id).sum()
        as_original += (shown == labels).sum()
        random = shown[(shown != tokenizer.mask_id) & (shown != labels)]
        as_random += len(random)
        assert not special & set(random.tolist())  # random replacements skip specials
        # Tokens not selected are shown unchanged, so no other [MASK] appears.
        num_masks = (ex["input_ids"][row] == tokenizer.mask_id).sum()
        assert num_masks == (shown == tokenizer.mask_id).sum()
    total = as_mask + as_original + as_random
    assert total > 15_000
    assert abs(as_mask / total - 0.8) < 0.015
    assert abs(as_original / total - 0.1) < 0.01
    assert abs(as_random / total - 0.1) < 0.01


def test_next_sentence_balance(examples):
    assert set(np.unique(examples["next_sentence_label"])) == {0, 1}
    # A chunk of one sentence always takes a random next, as in the original: a bit over 50%.
    assert abs(examples["next_sentence_label"].mean() - 0.5) < 0.05


def test_random_next_comes_from_another_document(tokenizer):
    # Two documents in disjoint vocabularies: each segment shows where it came from.
    # With only two, the original's 10 retries would sometimes keep the same document.
    rng = np.random.default_rng(1)
    words = {0: ("sea", "king"), 1: ("lord", "night")}  # (sentence start, body)
    docs = [
        "\n".join(
            " ".join([start] + [body] * int(k)) + "." for k in rng.integers(1, 11, 400)
        )
        for start, body in words.values()
    ]
    own = [set(tokenizer.encode(doc)) for doc in docs]
    own = [own[0] - own[1], own[1] - own[0]]
    options = dataclasses.replace(OPTIONS, max_seq_length=32, dupe_factor=3)
    ex = create_pretraining_examples(docs, tokenizer, options)
    labels = ex["next_sentence_label"]
    assert len(labels) > 500 and 0.4 < labels.mean() < 0.6
    starts = {tokenizer.encode(start)[0] for start, _ in words.values()}
    stop = tokenizer.encode("sea.")[-1]
    cut = np.zeros(4)  # A's front, A's back, B's front, B's back cut mid-sentence
    for row, label in enumerate(labels):
        a, b = _segments(ex, row)
        a_doc = {d for d in (0, 1) if own[d] & set(a)}
        b_doc = {d for d in (0, 1) if own[d] & set(b)}
        assert len(a_doc) == 1 and len(b_doc) == 1, f"row {row} mixes documents"
        assert (a_doc != b_doc) == bool(label)
        cut += [a[0] not in starts, a[-1] != stop, b[0] not in starts, b[-1] != stop]
    # truncate_seq_pair cuts the longer side at its front or its back, at random.
    assert (cut / len(labels) > 0.03).all(), cut / len(labels)


def test_unused_segments_are_put_back(examples, plays, tokenizer):
    """A random next leaves the rest of its chunk for the next pair (as the original), so
    one pass shows nearly every token as A or as an actual-next B; without that, ~2/3."""
    total = sum(
        len(tokenizer.encode(s)) for play in plays for s in split_sentences(play)
    )
    shown = 0
    for row, label in enumerate(examples["next_sentence_label"]):
        a, b = _segments(examples, row)
        shown += len(a) + (len(b) if label == 0 else 0)
    assert 0.85 < shown / total <= 1.0  # truncation drops the rest


def _words(ids: np.ndarray, tokenizer) -> list[list[int]]:
    """Positions of each word (a word-start piece and the pieces after it), between specials."""
    words: list[list[int]] = []
    for pos, token in enumerate(ids.tolist()):
        if token in _special(tokenizer):
            continue
        if (
            words
            and ids[pos - 1] not in _special(tokenizer)
            and not tokenizer.starts_word(token)
        ):
            words[-1].append(pos)
        else:
            words.append([pos])
    return words


def _split_words(ex: dict[str, np.ndarray], tokenizer) -> int:
    """How many words over all rows have some, but not all, of their pieces selected."""
    split = 0
    for row in range(len(ex["input_ids"])):
        selected = set(_selected(ex, row).tolist())
        for word in _words(_original(ex, row), tokenizer):
            split += 0 < len(selected.intersection(word)) < len(word)
    return split


def test_whole_word_masking_masks_whole_words(examples, wwm_examples, tokenizer):
    assert _split_words(examples, tokenizer) > 100  # the check can see a cut word
    assert _split_words(wwm_examples, tokenizer) == 0
    counts = (wwm_examples["masked_lm_weights"] > 0).sum(1)
    lengths = wwm_examples["attention_mask"].sum(1)
    # A word that would overshoot the count is skipped, so the rate may fall a little.
    assert abs(counts.sum() / lengths.sum() - 0.15) < 0.02
    multi = sum(
        len(word) > 1 and word[0] in set(_selected(wwm_examples, row).tolist())
        for row in range(len(counts))
        for word in _words(_original(wwm_examples, row), tokenizer)
    )
    assert multi > 100  # multi-piece words really are masked, as wholes


def test_short_seq_prob_shortens_targets(plays, tokenizer):
    def mean_length(prob: float) -> float:
        options = dataclasses.replace(OPTIONS, short_seq_prob=prob)
        ex = create_pretraining_examples(plays[:2], tokenizer, options)
        return ex["attention_mask"].sum(1).mean()

    full, short = mean_length(0.0), mean_length(1.0)
    assert full > 0.85 * OPTIONS.max_seq_length
    # randint(2, 61) targets average ~32 tokens, plus the sentence that overshoots.
    assert short < 0.7 * full


def test_deterministic_for_a_seed(plays, tokenizer, examples):
    again = create_pretraining_examples(plays, tokenizer, OPTIONS)
    assert all(np.array_equal(again[k], examples[k]) for k in examples)
    other = create_pretraining_examples(
        plays, tokenizer, dataclasses.replace(OPTIONS, seed=1)
    )
    assert not np.array_equal(
        other["masked_lm_positions"][:50], examples["masked_lm_positions"][:50]
    )


def test_dupe_factor_repeats_the_corpus(plays, tokenizer, examples):
    twice = create_pretraining_examples(
        plays, tokenizer, dataclasses.replace(OPTIONS, dupe_factor=2)
    )
    assert 1.8 < len(twice["input_ids"]) / len(examples["input_ids"]) < 2.2


class _NoMask:
    """The trained tokenizer with its [MASK] token hidden."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer

    def __getattr__(self, name):
        return None if name == "mask_id" else getattr(self._tokenizer, name)


def test_bad_input_errors(plays, tokenizer):
    with pytest.raises(InputError, match="at least 2 documents"):
        create_pretraining_examples(plays[:1], tokenizer, OPTIONS)
    with pytest.raises(InputError, match="got 1 of 3"):
        create_pretraining_examples([plays[0], "", " \n\n "], tokenizer, OPTIONS)
    with pytest.raises(InputError, match=re.escape("no [MASK] token")):
        create_pretraining_examples(plays, _NoMask(tokenizer), OPTIONS)
    with pytest.raises(ConfigError, match="max_seq_length"):
        BertPretrainingOptions(max_seq_length=4)
    with pytest.raises(ConfigError, match="masked_lm_prob"):
        BertPretrainingOptions(masked_lm_prob=1.5)
