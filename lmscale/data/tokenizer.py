"""Tokenizers behind one small interface, and SentencePiece training.

Every tokenizer the project uses (SentencePiece models we train, WordPiece and GPT-2 BPE
vocabularies of converted checkpoints) exposes the same surface, so example builders never
ask which kind they hold: ids for text, character offsets for span tasks, the special-token
ids each model family needs, and whether a token starts a word (whole-word masking).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol
from collections.abc import Sequence

import sentencepiece as spm

from lmscale import storage
from lmscale.errors import InputError

# One vocabulary serves both families: BERT needs [CLS] [SEP] [MASK] [PAD]; GPT needs an
# end-of-text separator between packed documents.
PAD, UNK, CLS, SEP, MASK, EOT = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<|endoftext|>"


class Tokenizer(Protocol):
    vocab_size: int
    pad_id: int | None
    cls_id: int | None
    sep_id: int | None
    mask_id: int | None
    eot_id: int | None

    def encode(self, text: str) -> list[int]: ...

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids and, per token, the [start, end) character span it covers in `text`."""
        ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def starts_word(self, token_id: int) -> bool:
        """True if the token begins a new word (used by whole-word masking)."""
        ...


class SentencePieceTokenizer:
    """A trained SentencePiece model (unigram or BPE) with the lmscale special tokens."""

    def __init__(self, model_file: str):
        if not storage.isfile(model_file):
            raise InputError(
                f"tokenizer model {model_file!r} does not exist; train one with "
                "'lmscale tokenizer train' or set data.tokenizer to an existing .model file"
            )
        self.model_file = model_file
        self._sp = spm.SentencePieceProcessor(model_proto=storage.read_bytes(model_file))
        self.vocab_size = self._sp.get_piece_size()
        self.pad_id = self._special(PAD)
        self.cls_id = self._special(CLS)
        self.sep_id = self._special(SEP)
        self.mask_id = self._special(MASK)
        self.eot_id = self._special(EOT)
        self._word_start = [
            self._sp.id_to_piece(i).startswith("\u2581") for i in range(self.vocab_size)
        ]

    def _special(self, piece: str) -> int | None:
        token_id = self._sp.piece_to_id(piece)
        # piece_to_id answers unk_id for unknown pieces.
        return None if token_id == self._sp.unk_id() and piece != UNK else token_id

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        proto = self._sp.encode(text, return_type="proto")
        # SentencePiece reports offsets in UTF-8 bytes of the original text; convert to
        # character offsets so callers can slice the Python string.
        byte_to_char = _byte_to_char_index(text)
        ids, offsets = [], []
        for piece in proto.pieces:
            ids.append(piece.id)
            offsets.append((byte_to_char[piece.begin], byte_to_char[piece.end]))
        return ids, offsets

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode([int(i) for i in ids])

    def id_to_piece(self, token_id: int) -> str:
        return self._sp.id_to_piece(int(token_id))

    def starts_word(self, token_id: int) -> bool:
        return self._word_start[int(token_id)]


def _byte_to_char_index(text: str) -> list[int]:
    """Map each UTF-8 byte offset (0..len(bytes)) to the character offset it falls in."""
    index = []
    for char_pos, char in enumerate(text):
        index.extend([char_pos] * len(char.encode("utf-8")))
    index.append(len(text))
    return index


@dataclass(frozen=True)
class TokenizerTrainSpec:
    inputs: tuple[str, ...]
    vocab_size: int
    model_type: str = "unigram"  # or "bpe"
    character_coverage: float = 0.9995
    max_sentence_length: int = 16384
    input_sentence_size: int = 2_000_000


def expand_inputs(patterns: Sequence[str]) -> list[str]:
    """Expand local or remote (gs://) globs; fail with the pattern named when nothing
    matches."""
    files: list[str] = []
    for pattern in patterns:
        matches = storage.glob(pattern)
        if not matches:
            raise InputError(f"no file matches {pattern!r}; check the path or glob")
        files.extend(m for m in matches if storage.isfile(m))
    return files


def train_sentencepiece(spec: TokenizerTrainSpec, output_prefix: str) -> str:
    """Train a SentencePiece model; returns the path of the written `.model` file."""
    if spec.model_type not in ("unigram", "bpe"):
        raise InputError(f"model type {spec.model_type!r} is not supported; use unigram or bpe")
    files = expand_inputs(spec.inputs)
    for path in files:
        if storage.size(path) == 0:
            raise InputError(f"input file {path!r} is empty")
    files = [storage.local_copy(path) for path in files]  # SentencePiece reads local files
    os.makedirs(os.path.dirname(os.path.abspath(output_prefix)), exist_ok=True)
    try:
        spm.SentencePieceTrainer.train(
            input=files,
            model_prefix=output_prefix,
            vocab_size=spec.vocab_size,
            model_type=spec.model_type,
            character_coverage=spec.character_coverage,
            max_sentence_length=spec.max_sentence_length,
            input_sentence_size=spec.input_sentence_size,
            shuffle_input_sentence=True,
            pad_id=0,
            pad_piece=PAD,
            unk_id=1,
            unk_piece=UNK,
            bos_id=-1,
            eos_id=-1,
            user_defined_symbols=[CLS, SEP, MASK, EOT],
            # Keep digits and whitespace runs splittable so any text round-trips.
            split_digits=True,
            byte_fallback=True,
            minloglevel=2,
        )
    except RuntimeError as err:
        # SentencePiece's own message says e.g. "Vocabulary size too high (8000). Please
        # set it to a value <= 3210."; keep it and say which input was too small.
        raise InputError(f"tokenizer training on {len(files)} file(s) failed: {err}") from err
    return output_prefix + ".model"
