"""Classification input reading, encoding and scores (no model involved)."""

import numpy as np
import pytest

from lmscale.errors import InputError
from lmscale.tasks.classify import (
    classification_scores, encode_texts, label_ids, read_labelled_texts,
)


class CharTokenizer:
    """One token per character, ids 10+; [PAD]=0 [CLS]=1 [SEP]=2."""

    pad_id, cls_id, sep_id = 0, 1, 2

    def encode(self, text):
        return [10 + ord(c) % 50 for c in text]


def test_tsv_keeps_bare_quotes_and_jsonl_reads_objects(tmp_path):
    (tmp_path / "a.tsv").write_text('sentence\tlabel\nit \'s a "gem"\t1\nmeh\t0\n')
    data = read_labelled_texts(str(tmp_path / "a.tsv"), ["sentence"], "label")
    assert data.texts == [('it \'s a "gem"',), ("meh",)] and data.labels == ["1", "0"]
    (tmp_path / "b.jsonl").write_text('{"s": "x", "y": "pos"}\n\n{"s": "z", "y": "neg"}\n')
    data = read_labelled_texts(str(tmp_path / "b.jsonl"), ["s"], "y")
    assert data.labels == ["pos", "neg"]
    with pytest.raises(InputError, match=r"example 1 lacks \['label'\]"):
        read_labelled_texts(str(tmp_path / "b.jsonl"), ["s"], "label")


def test_unknown_label_names_the_label_and_example(tmp_path):
    (tmp_path / "a.tsv").write_text("sentence\tlabel\nfine\t1\nodd\t2\n")
    data = read_labelled_texts(str(tmp_path / "a.tsv"), ["sentence"], "label")
    with pytest.raises(InputError, match=r"labels \['2'\] \(first at example 2\)"):
        label_ids(data, ["0", "1"])


def test_pairs_are_truncated_longest_first_and_padded():
    arrays = encode_texts([("abcdef", "xy"), ("a",)], CharTokenizer(), max_seq_length=8)
    # [CLS] a b c [SEP] x y [SEP]: the longer segment gave up three tokens.
    assert arrays["input_ids"][0].tolist() == [1, *CharTokenizer().encode("abc"), 2,
                                               *CharTokenizer().encode("xy"), 2]
    assert arrays["token_type_ids"][0].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert arrays["attention_mask"][1].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert arrays["input_ids"][1, 3:].tolist() == [0] * 5


def test_binary_scores():
    scores = classification_scores(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 1]), 2)
    assert scores["accuracy"] == 50.0 and scores["f1"] == pytest.approx(50.0)
    assert "f1" not in classification_scores(np.array([2]), np.array([2]), 3)
