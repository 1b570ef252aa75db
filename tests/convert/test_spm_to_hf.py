"""A SentencePiece model exported as tokenizer.json encodes real text to the same ids, and
`convert to-hf` of a model trained with it loads in transformers with those ids."""

import importlib.util

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from tokenizers import Tokenizer

from lmscale.cli import main
from lmscale.convert.pretrained import save_pretrained
from lmscale.convert.spm_to_hf import hf_tokenizer, write_hf_tokenizer
from lmscale.data.tokenizer import SentencePieceTokenizer, TokenizerTrainSpec, train_sentencepiece
from lmscale.errors import InputError
from lmscale.models import BertForPretraining, ModelConfig, preset

TRICKY = ["  leading,   inner and trailing spaces  ", "tabs\tand\nnew lines\n\nhere",
          "naïve café — “quotes” ½ ﬁ 𝔘nicode 中文 😀", "123456 3.14159 1,000,000",
          "", " ", "\u3000full-width\u3000space", "x" * 300]


def test_tokenizer_json_encodes_and_decodes_exactly_as_sentencepiece(docstring_corpus,
                                                                      docstring_tokenizer):
    reference = SentencePieceTokenizer(docstring_tokenizer)
    exported = hf_tokenizer(docstring_tokenizer, "gpt")
    text = open(docstring_corpus, encoding="utf-8").read()
    chunks = [text[i:i + 400] for i in range(0, min(len(text), 200_000), 400)] + TRICKY
    for chunk in chunks:
        ids = reference.encode(chunk)
        assert exported.encode(chunk, add_special_tokens=False).ids == ids, repr(chunk[:80])
        assert exported.decode(ids, skip_special_tokens=False) == reference.decode(ids)


def test_bert_inputs_get_cls_and_sep(docstring_tokenizer):
    reference = SentencePieceTokenizer(docstring_tokenizer)
    encoding = hf_tokenizer(docstring_tokenizer, "bert").encode("a question", "its passage")
    a, b = reference.encode("a question"), reference.encode("its passage")
    assert encoding.ids == [reference.cls_id, *a, reference.sep_id, *b, reference.sep_id]
    assert encoding.type_ids == [0] * (len(a) + 2) + [1] * (len(b) + 1)


def test_a_bpe_model_is_refused_with_a_reason(docstring_corpus, tmp_path):
    model = train_sentencepiece(TokenizerTrainSpec((docstring_corpus,), 512, "bpe"),
                                str(tmp_path / "bpe"))
    with pytest.raises(InputError, match="only unigram"):
        hf_tokenizer(model, "bert")


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                    reason="transformers is not installed (optional)")
def test_transformers_autotokenizer_reads_the_export(docstring_tokenizer, tmp_path):
    from transformers import AutoTokenizer

    write_hf_tokenizer(docstring_tokenizer, "bert", 128, str(tmp_path))
    loaded = AutoTokenizer.from_pretrained(str(tmp_path))
    reference = SentencePieceTokenizer(docstring_tokenizer)
    text = "Return the number of items in a container."
    assert loaded(text)["input_ids"] == [reference.cls_id, *reference.encode(text),
                                         reference.sep_id]
    assert loaded.mask_token_id == reference.mask_id and loaded.pad_token_id == 0


def test_convert_to_hf_writes_tokenizer_json_beside_spm_model(docstring_tokenizer, tmp_path):
    config = ModelConfig.from_dict(preset("bert-tiny", vocab_size=512, max_len=32,
                                          num_layers=1))
    ids = jnp.zeros((1, 4), jnp.int32)
    params = nn.unbox(BertForPretraining(config).init(jax.random.key(0), ids, ids, ids, ids))
    save_pretrained(str(tmp_path / "lm"), config, params, [docstring_tokenizer])
    assert main(["convert", "to-hf", "--checkpoint", str(tmp_path / "lm"),
                 "--out", str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "spm.model").is_file()
    exported = Tokenizer.from_file(str(tmp_path / "hf" / "tokenizer.json"))
    reference = SentencePieceTokenizer(docstring_tokenizer)
    assert exported.encode("Open the file.").ids == [
        reference.cls_id, *reference.encode("Open the file."), reference.sep_id]
