"""The `Tokenizer` protocol over a Hugging Face `tokenizers.Tokenizer` (WordPiece, BPE)."""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer


class HuggingFaceTokenizer:
    """Encoding, offsets and decoding shared by every `tokenizers`-backed vocabulary.

    Subclasses set the special-token ids and say which tokens start a word.
    """

    def __init__(self, tokenizer: Tokenizer):
        self._tok = tokenizer
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self._word_start = [self._starts_word(tokenizer.id_to_token(i) or "")
                            for i in range(self.vocab_size)]

    def _starts_word(self, piece: str) -> bool:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        # `tokenizers` reports offsets in characters of the original (un-normalised) text.
        encoding = self._tok.encode(text, add_special_tokens=False)
        return encoding.ids, [tuple(o) for o in encoding.offsets]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def id_to_piece(self, token_id: int) -> str:
        return self._tok.id_to_token(int(token_id))

    def starts_word(self, token_id: int) -> bool:
        return self._word_start[int(token_id)]
