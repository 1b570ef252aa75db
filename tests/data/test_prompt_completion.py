"""Prompt/completion examples: the loss falls exactly on completion tokens + end-of-text."""

import json

import numpy as np
import pytest

from lmscale.data.prompt_completion import (
    packed_examples, padded_examples, read_prompt_completion,
)
from lmscale.errors import InputError


class NumberTokenizer:
    eot_id = 99

    def encode(self, text):
        return [int(t) for t in text.split()]


def test_padded_rows_mask_only_completion_targets():
    rows = padded_examples([("1 2 3", "4 5"), ("7", "8")], NumberTokenizer(), seq_len=8)
    np.testing.assert_array_equal(rows["input_ids"][0], [1, 2, 3, 4, 5, 0, 0, 0])
    np.testing.assert_array_equal(rows["targets"][0], [2, 3, 4, 5, 99, 0, 0, 0])
    np.testing.assert_array_equal(rows["loss_mask"][0], [0, 0, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(rows["loss_mask"][1], [1, 1, 0, 0, 0, 0, 0, 0])


def test_too_long_examples_lose_prompt_tokens_from_the_left():
    rows = padded_examples([("1 2 3 4 5 6", "7 8")], NumberTokenizer(), seq_len=4)
    np.testing.assert_array_equal(rows["input_ids"][0], [5, 6, 7, 8])
    np.testing.assert_array_equal(rows["targets"][0], [6, 7, 8, 99])
    np.testing.assert_array_equal(rows["loss_mask"][0], [0, 1, 1, 1])


def test_packing_keeps_every_completion_target():
    pairs = [("1 2", "3"), ("4", "5 6"), ("7 8 9", "10")]
    packed = packed_examples(pairs, NumberTokenizer(), seq_len=4)
    targets = packed["targets"][packed["loss_mask"] > 0].tolist()
    assert targets == [3, 99, 5, 6, 99, 10, 99]


def test_bad_files_are_errors(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "a", "completion": "b", "extra": 1}) + "\n")
    with pytest.raises(InputError, match="exactly the string fields"):
        read_prompt_completion(str(path))
    path.write_text(json.dumps({"prompt": "a", "completion": ""}) + "\n")
    with pytest.raises(InputError, match="empty completion"):
        read_prompt_completion(str(path))
