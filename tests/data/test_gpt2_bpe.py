"""GPT-2 byte-level BPE gives the reference ids of the real GPT-2 vocabulary."""

import os

import pytest
from conftest import SHARED_DATA

from lmscale.data.gpt2_bpe import GPT2BPETokenizer
from lmscale.data.load_tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def gpt2_tokenizer():
    directory = os.path.join(SHARED_DATA, "tokenizers", "gpt2")
    if not os.path.isfile(os.path.join(directory, "vocab.json")):
        pytest.skip(f"the GPT-2 vocabulary is not at {directory}")
    return load_tokenizer(directory)


def test_reference_ids_and_end_of_text(gpt2_tokenizer):
    assert isinstance(gpt2_tokenizer, GPT2BPETokenizer)
    assert gpt2_tokenizer.encode("Hello world") == [15496, 995]
    assert gpt2_tokenizer.eot_id == 50256
    assert gpt2_tokenizer.vocab_size == 50257
    assert gpt2_tokenizer.encode("a<|endoftext|>b") == [64, 50256, 65]


def test_round_trip_offsets_and_word_starts(gpt2_tokenizer):
    text = " Héllo,\n  wörld! 1234"
    ids, offsets = gpt2_tokenizer.encode_with_offsets(text)
    assert gpt2_tokenizer.decode(ids) == text
    assert "".join(text[a:b] for a, b in offsets) == text
    world = gpt2_tokenizer.encode(" world")
    assert world == [995] and gpt2_tokenizer.starts_word(995)
    assert not gpt2_tokenizer.starts_word(gpt2_tokenizer.encode("Hello")[0])
