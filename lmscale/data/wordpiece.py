"""WordPiece vocabularies of converted BERT checkpoints, through Hugging Face `tokenizers`.

Converted models must see exactly the ids they were trained on, so we do not re-implement
BERT's basic tokenizer + WordPiece: the checkpoint's own `tokenizer.json` is loaded with the
`tokenizers` library, or, where only `vocab.txt` exists, the same pipeline as
`tokenizers.BertWordPieceTokenizer` is assembled with the case handling that the
checkpoint's `tokenizer_config.json` states.
"""

from __future__ import annotations

import json
import os

from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)

from lmscale.data.hf_tokenizer import HuggingFaceTokenizer
from lmscale.data.tokenizer import CLS, MASK, PAD, SEP, UNK
from lmscale.errors import InputError

_CONTINUATION = "##"


class WordPieceTokenizer(HuggingFaceTokenizer):
    """A BERT WordPiece tokenizer behind the lmscale `Tokenizer` protocol.

    `encode` adds no special tokens: example builders place [CLS]/[SEP] themselves.
    """

    def __init__(self, tokenizer: Tokenizer):
        # A tokenizer.json may carry the exporter's truncation/padding (all-MiniLM-L6-v2
        # truncates and pads to 128); example builders window and pad on their own.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        super().__init__(tokenizer)
        self.pad_id = tokenizer.token_to_id(PAD)
        self.cls_id = tokenizer.token_to_id(CLS)
        self.sep_id = tokenizer.token_to_id(SEP)
        self.mask_id = tokenizer.token_to_id(MASK)
        self.eot_id: int | None = None  # BERT has no end-of-text token

    @classmethod
    def from_checkpoint_dir(cls, model_dir: str) -> WordPieceTokenizer:
        """Load `tokenizer.json` from a Hugging Face checkpoint, else build from `vocab.txt`."""
        tokenizer_file = os.path.join(model_dir, "tokenizer.json")
        if os.path.isfile(tokenizer_file):
            try:
                tokenizer = Tokenizer.from_file(tokenizer_file)
            except Exception as err:  # the Rust loader raises a bare Exception
                raise InputError(f"cannot load {tokenizer_file!r}: {err}") from err
            if not isinstance(tokenizer.model, models.WordPiece):
                raise InputError(f"{tokenizer_file!r} holds a {type(tokenizer.model).__name__} "
                                 "model, not WordPiece; is this a BERT checkpoint?")
            return cls(tokenizer)
        vocab_file = os.path.join(model_dir, "vocab.txt")
        if os.path.isfile(vocab_file):
            return cls.from_vocab_file(vocab_file, **_case_options(model_dir))
        raise InputError(f"{model_dir!r} has neither tokenizer.json nor vocab.txt; point "
                         "--model-dir at a Hugging Face BERT checkpoint directory")

    @classmethod
    def from_vocab_file(
        cls,
        vocab_file: str,
        lowercase: bool = True,
        strip_accents: bool | None = None,
        handle_chinese_chars: bool = True,
    ) -> WordPieceTokenizer:
        """The pipeline of `tokenizers.BertWordPieceTokenizer` over a `vocab.txt`.

        `strip_accents=None` follows `lowercase`, as in BERT's uncased models.
        """
        if not os.path.isfile(vocab_file):
            raise InputError(f"vocabulary file {vocab_file!r} does not exist")
        tokenizer = Tokenizer(models.WordPiece.from_file(vocab_file, unk_token=UNK))
        missing = [t for t in (UNK, CLS, SEP, PAD, MASK) if tokenizer.token_to_id(t) is None]
        if missing:
            raise InputError(f"{vocab_file!r} lacks the BERT special tokens {missing}")
        tokenizer.add_special_tokens([UNK, SEP, CLS, PAD, MASK])
        tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=handle_chinese_chars,
            strip_accents=strip_accents, lowercase=lowercase)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.post_processor = processors.BertProcessing(
            (SEP, tokenizer.token_to_id(SEP)), (CLS, tokenizer.token_to_id(CLS)))
        tokenizer.decoder = decoders.WordPiece(prefix=_CONTINUATION)
        return cls(tokenizer)

    def _starts_word(self, piece: str) -> bool:
        return not piece.startswith(_CONTINUATION)


def _case_options(model_dir: str) -> dict:
    """Case handling from `tokenizer_config.json`; BertTokenizer's defaults when absent."""
    config_file = os.path.join(model_dir, "tokenizer_config.json")
    config = {}
    if os.path.isfile(config_file):
        try:
            with open(config_file, encoding="utf-8") as f:
                config = json.load(f)
        except json.JSONDecodeError as err:
            raise InputError(f"{config_file!r} is not valid JSON: {err}") from err
    return {
        "lowercase": bool(config.get("do_lower_case", True)),
        "strip_accents": config.get("strip_accents"),
        "handle_chinese_chars": bool(config.get("tokenize_chinese_chars", True)),
    }
