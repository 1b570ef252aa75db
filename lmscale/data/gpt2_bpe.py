"""GPT-2's byte-level BPE (vocab.json + merges.txt) through Hugging Face `tokenizers`.

A converted GPT-2 must see exactly the ids it was trained on, so this is the reference
pipeline (`tokenizers.ByteLevelBPETokenizer` without a prefix space, as OpenAI's encoder
and transformers' `GPT2TokenizerFast`), not a re-implementation: "Hello world" ->
[15496, 995], <|endoftext|> = 50256.
"""

from __future__ import annotations

import os

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

from lmscale.data.hf_tokenizer import HuggingFaceTokenizer
from lmscale.data.tokenizer import EOT
from lmscale.errors import InputError

VOCAB_FILE, MERGES_FILE = "vocab.json", "merges.txt"
_WORD_START = "\u0120"  # byte-level BPE's visible form of a leading space ("Ġ")


def is_gpt2_bpe_dir(directory: str) -> bool:
    return all(os.path.isfile(os.path.join(directory, f)) for f in (VOCAB_FILE, MERGES_FILE))


class GPT2BPETokenizer(HuggingFaceTokenizer):
    """GPT-2's tokenizer behind the lmscale `Tokenizer` protocol.

    GPT-2 has one special token, <|endoftext|>, which separates documents; it has no
    [PAD]/[CLS]/[SEP]/[MASK], so those ids are None.
    """

    def __init__(self, vocab_file: str, merges_file: str):
        for path in (vocab_file, merges_file):
            if not os.path.isfile(path):
                raise InputError(f"GPT-2 tokenizer file {path!r} does not exist")
        try:
            tokenizer = Tokenizer(models.BPE.from_file(vocab_file, merges_file))
        except Exception as err:  # the Rust loader raises a bare Exception
            raise InputError(f"cannot load GPT-2 BPE from {vocab_file!r} and "
                             f"{merges_file!r}: {err}") from err
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        # trim_offsets=False: offsets cover the leading space a token carries, as the text
        # slice that decodes to it.
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
        if tokenizer.token_to_id(EOT) is None:
            raise InputError(f"{vocab_file!r} lacks {EOT}; is it a GPT-2 vocabulary?")
        tokenizer.add_special_tokens([EOT])
        super().__init__(tokenizer)
        self.directory = os.path.dirname(os.path.abspath(vocab_file))
        self.pad_id = self.cls_id = self.sep_id = self.mask_id = None
        self.eot_id = tokenizer.token_to_id(EOT)

    @classmethod
    def from_dir(cls, directory: str) -> GPT2BPETokenizer:
        return cls(os.path.join(directory, VOCAB_FILE), os.path.join(directory, MERGES_FILE))

    def _starts_word(self, piece: str) -> bool:
        return piece.startswith(_WORD_START)
