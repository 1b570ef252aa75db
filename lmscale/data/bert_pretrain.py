"""BERT pretraining examples: masked LM + next-sentence prediction (MLM + NSP).

The semantics are those of google-research/bert `create_pretraining_data.py`
(`create_instances_from_document`, `truncate_seq_pair`, `create_masked_lm_predictions`),
written over token ids and numpy's `Generator`, with these deliberate differences:

- Raw documents are split into sentences here (the original reads one sentence per line):
  see `split_sentences`.
- The shortened target length (`short_seq_prob`) is drawn afresh for every example; the
  original draws it once per document, so with book-length documents a whole document's
  examples would be short or long together rather than 10% of examples being short.
- The random-next segment always comes from another document; the original gives up after
  10 tries and may then use the same document.
- The 10% random replacement draws from the vocabulary minus the special tokens, so a
  random replacement never forges a [CLS]/[SEP]/[MASK]/[PAD].
- With whole-word masking, a word never continues across [CLS]/[SEP]: a continuation
  piece left at a segment's start by truncation is its own word (the original would join
  it to the last word before the [SEP]).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lmscale.data.tokenizer import Tokenizer
from lmscale.errors import ConfigError, InputError

# A sentence ends at a line break, or at . ! ? followed by white space (the punctuation
# stays with its sentence). Simple on purpose: "Mr. Smith" splits, which only moves an
# NSP boundary.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class TooFewDocuments(InputError):
    """Next-sentence prediction needs a second document to draw random segments from."""


@dataclass(frozen=True)
class BertPretrainingOptions:
    """Options of `create_pretraining_examples`; defaults are the original's flags."""

    max_seq_length: int = 128
    short_seq_prob: float = 0.1
    masked_lm_prob: float = 0.15
    max_predictions_per_seq: int = 20
    dupe_factor: int = 10
    whole_word_mask: bool = False
    seed: int | tuple[int, ...] = 12345  # anything numpy's default_rng takes

    def __post_init__(self) -> None:
        # [CLS] A [SEP] B [SEP] with A and B non-empty, and randint(2, max_num_tokens).
        if self.max_seq_length < 5:
            raise ConfigError(
                f"max_seq_length is {self.max_seq_length}; it must be >= 5"
            )
        for name in ("short_seq_prob", "masked_lm_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} is {value}; it must lie in [0, 1]")
        for name in ("max_predictions_per_seq", "dupe_factor"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} is {getattr(self, name)}; it must be >= 1")


class _Instance(NamedTuple):
    tokens: list[int]  # [CLS] A [SEP] B [SEP], after masking
    num_a: int  # tokens in A
    is_random_next: bool
    masked_positions: list[int]  # sorted
    masked_ids: list[int]  # original ids at masked_positions


@dataclass(frozen=True)
class _Vocab:
    cls_id: int
    sep_id: int
    mask_id: int
    pad_id: int
    special_ids: frozenset[int]
    replacement_ids: np.ndarray  # ids the 10% random replacement draws from
    tokenizer: Tokenizer


def split_sentences(text: str) -> list[str]:
    """Split a raw document into sentences: at line breaks and after . ! ? + white space.

    Sentences are stripped; empty ones are dropped. Deterministic and language-agnostic.
    """
    pieces = (
        part.strip() for line in text.splitlines() for part in _SENTENCE_END.split(line)
    )
    return [piece for piece in pieces if piece]


def create_pretraining_examples(
    documents: Sequence[str], tokenizer: Tokenizer, options: BertPretrainingOptions
) -> dict[str, np.ndarray]:
    """MLM + NSP examples from raw documents, padded to `options.max_seq_length`.

    Returns N examples (shuffled, as the original does) as numpy arrays:
    input_ids, token_type_ids, attention_mask [N, max_seq_length] int32;
    masked_lm_positions, masked_lm_ids [N, max_predictions_per_seq] int32 and
    masked_lm_weights float32 (1 for a real prediction, 0 for padding);
    next_sentence_label [N] int32 (0 = B is the actual next segment, 1 = random).
    """
    vocab = _vocab(tokenizer)
    rng = np.random.default_rng(options.seed)
    instances = list(_instances(_tokenized_documents(documents, vocab), vocab, options, rng))
    order = rng.permutation(len(instances))
    return _to_arrays([instances[i] for i in order], vocab, options)


def pretraining_examples(
    documents: Sequence[str], tokenizer: Tokenizer, options: BertPretrainingOptions
) -> Iterator[dict[str, np.ndarray]]:
    """The examples of `create_pretraining_examples` one at a time, in the order they are
    made, without the final shuffle, which would hold them all: sharded preparation
    streams them to the shard's file, and the loader shuffles the whole split anew every
    epoch."""
    vocab = _vocab(tokenizer)
    rng = np.random.default_rng(options.seed)
    for instance in _instances(_tokenized_documents(documents, vocab), vocab, options, rng):
        yield _example(instance, vocab, options)


def _tokenized_documents(documents: Sequence[str], vocab: _Vocab) -> list[list[list[int]]]:
    tokenized = [_tokenize_document(doc, vocab) for doc in documents]
    all_documents = [doc for doc in tokenized if doc]
    if len(all_documents) < 2:
        raise TooFewDocuments(
            f"BERT pretraining needs at least 2 documents with text (next-sentence "
            f"prediction draws its random segments from another document); got "
            f"{len(all_documents)} of {len(documents)}. Add documents, or separate them "
            "with blank lines in a single file"
        )
    return all_documents


def _instances(
    all_documents: list[list[list[int]]],
    vocab: _Vocab,
    options: BertPretrainingOptions,
    rng: np.random.Generator,
) -> Iterator[_Instance]:
    # As the original: dupe_factor passes over the corpus, each with fresh pairs and masks.
    for _ in range(options.dupe_factor):
        for document_index in range(len(all_documents)):
            yield from _instances_from_document(
                all_documents, document_index, vocab, options, rng
            )


def _vocab(tokenizer: Tokenizer) -> _Vocab:
    required = {
        "[CLS]": tokenizer.cls_id,
        "[SEP]": tokenizer.sep_id,
        "[MASK]": tokenizer.mask_id,
        "[PAD]": tokenizer.pad_id,
    }
    missing = [name for name, token_id in required.items() if token_id is None]
    if missing:
        raise InputError(
            f"the tokenizer has no {', '.join(missing)} token; BERT pretraining needs "
            "[CLS] [SEP] [MASK] [PAD]: train one with 'lmscale tokenizer train'"
        )
    special = {tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id, tokenizer.pad_id}
    if tokenizer.eot_id is not None:
        special.add(tokenizer.eot_id)
    replacement = np.array([i for i in range(tokenizer.vocab_size) if i not in special])
    return _Vocab(
        cls_id=tokenizer.cls_id,
        sep_id=tokenizer.sep_id,
        mask_id=tokenizer.mask_id,
        pad_id=tokenizer.pad_id,
        special_ids=frozenset(special),
        replacement_ids=replacement,
        tokenizer=tokenizer,
    )


def _tokenize_document(text: str, vocab: _Vocab) -> list[list[int]]:
    """A document as a list of non-empty token-id sentences.

    Special ids are dropped: our SentencePiece models turn the literal text "[SEP]" into
    the [SEP] id, whereas the original's WordPiece splits it into "[", "sep", "]", so
    document text can never forge a segment boundary there either.
    """
    sentences = []
    for sentence in split_sentences(text):
        ids = [
            t for t in vocab.tokenizer.encode(sentence) if t not in vocab.special_ids
        ]
        if ids:
            sentences.append(ids)
    return sentences


def _target_length(
    max_num_tokens: int, short_seq_prob: float, rng: np.random.Generator
) -> int:
    # Usually fill the sequence; sometimes (short_seq_prob) aim shorter, to lessen the
    # mismatch with short fine-tuning inputs. A target, not a hard limit.
    if rng.random() < short_seq_prob:
        return int(rng.integers(2, max_num_tokens + 1))  # randint(2, max_num_tokens)
    return max_num_tokens


def _instances_from_document(
    all_documents: list[list[list[int]]],
    document_index: int,
    vocab: _Vocab,
    options: BertPretrainingOptions,
    rng: np.random.Generator,
) -> list[_Instance]:
    """The original's `create_instances_from_document`, over sentence segments."""
    document = all_documents[document_index]
    max_num_tokens = options.max_seq_length - 3  # room for [CLS], [SEP], [SEP]
    target = _target_length(max_num_tokens, options.short_seq_prob, rng)
    instances = []
    chunk: list[list[int]] = []
    chunk_length = 0
    i = 0
    while i < len(document):
        chunk.append(document[i])
        chunk_length += len(document[i])
        # A and B split at sentence boundaries only: the original notes that an arbitrary
        # split point would make next-sentence prediction too easy.
        if i == len(document) - 1 or chunk_length >= target:
            a_end = int(rng.integers(1, len(chunk))) if len(chunk) >= 2 else 1
            tokens_a = [t for segment in chunk[:a_end] for t in segment]
            if len(chunk) == 1 or rng.random() < 0.5:
                is_random_next = True
                tokens_b = _random_segment(
                    all_documents, document_index, target - len(tokens_a), rng
                )
                # The original "puts back" the chunk's unused segments for the next pair.
                i -= len(chunk) - a_end
            else:
                is_random_next = False
                tokens_b = [t for segment in chunk[a_end:] for t in segment]
            tokens_a, tokens_b = _truncate_seq_pair(
                tokens_a, tokens_b, max_num_tokens, rng
            )
            tokens = [vocab.cls_id, *tokens_a, vocab.sep_id, *tokens_b, vocab.sep_id]
            masked, positions, labels = _mask_tokens(tokens, vocab, options, rng)
            instances.append(
                _Instance(masked, len(tokens_a), is_random_next, positions, labels)
            )
            chunk, chunk_length = [], 0
            target = _target_length(max_num_tokens, options.short_seq_prob, rng)
        i += 1
    return instances


def _random_segment(
    all_documents: list[list[list[int]]],
    document_index: int,
    target_length: int,
    rng: np.random.Generator,
) -> list[int]:
    """Sentences from a random start in a random *other* document, up to target_length."""
    other = int(rng.integers(len(all_documents) - 1))
    other += other >= document_index  # skip our own document
    document = all_documents[other]
    tokens: list[int] = []
    for segment in document[int(rng.integers(len(document))) :]:
        tokens.extend(segment)
        if len(tokens) >= target_length:
            break
    return tokens


def _truncate_seq_pair(
    tokens_a: list[int],
    tokens_b: list[int],
    max_num_tokens: int,
    rng: np.random.Generator,
) -> tuple[list[int], list[int]]:
    """The original's `truncate_seq_pair`: drop one token at a time from the longer side
    (B on a tie), from the front or the back at random to avoid biases."""
    excess = len(tokens_a) + len(tokens_b) - max_num_tokens
    if excess <= 0:
        return tokens_a, tokens_b
    a_lo, a_hi, b_lo, b_hi = 0, len(tokens_a), 0, len(tokens_b)
    # One coin per removed token, drawn at once: a long segment costs no Python-level
    # rng calls or O(n) list deletions per token.
    for from_front in rng.random(excess) < 0.5:
        if a_hi - a_lo > b_hi - b_lo:
            a_lo, a_hi = (a_lo + 1, a_hi) if from_front else (a_lo, a_hi - 1)
        else:
            b_lo, b_hi = (b_lo + 1, b_hi) if from_front else (b_lo, b_hi - 1)
    return tokens_a[a_lo:a_hi], tokens_b[b_lo:b_hi]


def _mask_tokens(
    tokens: list[int],
    vocab: _Vocab,
    options: BertPretrainingOptions,
    rng: np.random.Generator,
) -> tuple[list[int], list[int], list[int]]:
    """The original's `create_masked_lm_predictions`: (masked tokens, positions, labels)."""
    # Candidate groups: single tokens, or whole words (a word-start piece and the
    # continuation pieces after it) with whole-word masking. Never [CLS]/[SEP].
    candidates: list[list[int]] = []
    for index, token in enumerate(tokens):
        if token in vocab.special_ids:
            continue
        continues_word = (
            options.whole_word_mask
            and tokens[index - 1] not in vocab.special_ids
            and not vocab.tokenizer.starts_word(token)
        )
        if continues_word:
            candidates[-1].append(index)
        else:
            candidates.append([index])

    # As the original: the count includes [CLS]/[SEP], at least one, at most the cap.
    num_to_predict = min(
        options.max_predictions_per_seq,
        max(1, round(len(tokens) * options.masked_lm_prob)),
    )
    masked = list(tokens)
    positions: list[int] = []
    for k in rng.permutation(len(candidates)):
        if len(positions) >= num_to_predict:
            break
        group = candidates[k]
        # A whole word that would overshoot the count is skipped, not cut (as the original).
        if len(positions) + len(group) > num_to_predict:
            continue
        for index in group:
            # BERT appendix A.1: 80% [MASK], 10% random token, 10% left unchanged.
            draw = rng.random()
            if draw < 0.8:
                masked[index] = vocab.mask_id
            elif draw >= 0.9:
                masked[index] = int(rng.choice(vocab.replacement_ids))
            positions.append(index)
    positions.sort()
    return masked, positions, [tokens[p] for p in positions]


def _example(
    instance: _Instance, vocab: _Vocab, options: BertPretrainingOptions
) -> dict[str, np.ndarray]:
    """One instance as fixed-shape arrays (see `create_pretraining_examples`)."""
    length, preds = options.max_seq_length, options.max_predictions_per_seq
    num_tokens, num_masked = len(instance.tokens), len(instance.masked_positions)
    input_ids = np.full(length, vocab.pad_id, np.int32)
    input_ids[:num_tokens] = instance.tokens
    token_type_ids = np.zeros(length, np.int32)
    token_type_ids[instance.num_a + 2 : num_tokens] = 1  # B and its [SEP]
    attention_mask = np.zeros(length, np.int32)
    attention_mask[:num_tokens] = 1
    masked_lm_positions = np.zeros(preds, np.int32)
    masked_lm_positions[:num_masked] = instance.masked_positions
    masked_lm_ids = np.zeros(preds, np.int32)
    masked_lm_ids[:num_masked] = instance.masked_ids
    masked_lm_weights = np.zeros(preds, np.float32)
    masked_lm_weights[:num_masked] = 1.0
    return {
        "input_ids": input_ids,
        "token_type_ids": token_type_ids,
        "attention_mask": attention_mask,
        "masked_lm_positions": masked_lm_positions,
        "masked_lm_ids": masked_lm_ids,
        "masked_lm_weights": masked_lm_weights,
        "next_sentence_label": np.asarray(instance.is_random_next, np.int32),
    }


def example_features(options: BertPretrainingOptions) -> dict[str, tuple[tuple[int, ...], type]]:
    """The shape and dtype of each array of one example."""
    length, preds = options.max_seq_length, options.max_predictions_per_seq
    return {"input_ids": ((length,), np.int32), "token_type_ids": ((length,), np.int32),
            "attention_mask": ((length,), np.int32), "masked_lm_positions": ((preds,), np.int32),
            "masked_lm_ids": ((preds,), np.int32), "masked_lm_weights": ((preds,), np.float32),
            "next_sentence_label": ((), np.int32)}


def _to_arrays(
    instances: list[_Instance], vocab: _Vocab, options: BertPretrainingOptions
) -> dict[str, np.ndarray]:
    rows = [_example(instance, vocab, options) for instance in instances]
    return {
        name: np.stack([row[name] for row in rows]) if rows else np.zeros((0, *shape), dtype)
        for name, (shape, dtype) in example_features(options).items()
    }
