"""Any tokenizer lmscale reads, from where it lies: a SentencePiece model file, or a Hugging
Face checkpoint directory. The one module that knows every kind (the kinds know only the
shared protocol in `tokenizer.py`)."""

from __future__ import annotations

from lmscale import storage
from lmscale.data.gpt2_bpe import GPT2BPETokenizer, is_gpt2_bpe_dir
from lmscale.data.tokenizer import SentencePieceTokenizer, Tokenizer
from lmscale.data.wordpiece import WordPieceTokenizer


def load_tokenizer(path: str) -> Tokenizer:
    """A SentencePiece `.model` file, or a Hugging Face checkpoint directory (GPT-2
    `vocab.json` + `merges.txt`, or WordPiece `vocab.txt`/`tokenizer.json`), local or
    remote (a directory is read from a local copy)."""
    if storage.isdir(path):
        path = storage.local_copy(path)
        if is_gpt2_bpe_dir(path):
            return GPT2BPETokenizer.from_dir(path)
        return WordPieceTokenizer.from_checkpoint_dir(path)
    return SentencePieceTokenizer(path)
