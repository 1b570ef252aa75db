"""GPT packing: every token is a target exactly once, nothing is lost."""

import numpy as np
import pytest

from lmscale.data.gpt_pretrain import pack_token_pieces, pack_token_stream
from lmscale.errors import InputError


@pytest.mark.parametrize("length", [2, 17, 64, 65, 1000])
def test_packing_loses_no_token(length):
    stream = np.arange(1, length + 1, dtype=np.int32)
    rows = pack_token_stream(stream, seq_len=16, pad_id=0)
    targets = rows["targets"][rows["loss_mask"] > 0]
    # Every token but the first is predicted exactly once, in order.
    np.testing.assert_array_equal(targets, stream[1:])
    # Each target's input is the token before it in the stream.
    inputs = rows["input_ids"][rows["loss_mask"] > 0]
    np.testing.assert_array_equal(inputs, stream[:-1])
    # Only the final row can hold padding.
    assert rows["loss_mask"][:-1].all()


def test_rows_are_consecutive_windows():
    stream = np.arange(100, dtype=np.int32)
    rows = pack_token_stream(stream, seq_len=10)
    np.testing.assert_array_equal(rows["input_ids"][3], np.arange(30, 40))
    np.testing.assert_array_equal(rows["targets"][3], np.arange(31, 41))


def test_a_corpus_of_one_token_is_an_error():
    with pytest.raises(InputError, match="fewer than 2 tokens"):
        pack_token_stream(np.array([5], np.int32), seq_len=8)


@pytest.mark.parametrize("length", [1, 2, 16, 17, 33, 400])
def test_packing_pieces_row_by_row_equals_packing_their_concatenation(length):
    stream = np.arange(1, length + 1, dtype=np.int32)
    cuts = np.random.default_rng(length).choice(np.arange(1, length), min(5, length - 1),
                                                replace=False) if length > 1 else []
    rows = list(pack_token_pieces(np.split(stream, sorted(cuts)), seq_len=8, pad_id=0))
    if length < 2:
        assert rows == []  # nothing to predict
        return
    whole = pack_token_stream(stream, seq_len=8, pad_id=0)
    for name, array in whole.items():
        np.testing.assert_array_equal(np.stack([row[name] for row in rows]), array)
        assert rows[0][name].dtype == array.dtype
