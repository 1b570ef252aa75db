"""Prompt/completion examples: the loss falls exactly on completion tokens + end-of-text."""

import json

import jax
import numpy as np
import pytest

from lmscale.data.prompt_completion import (
    packed_examples, padded_examples, read_prompt_completion,
)
from lmscale.errors import InputError
from lmscale.models.config import ModelConfig
from lmscale.models.gpt import GPT
from lmscale.train.objectives import CausalLMObjective


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


def test_packing_fills_rows_with_whole_examples_numbered_by_segment():
    pairs = [("1", "2"), ("3 4", "5"), ("6", "7 8 9")]  # 2, 3 and 4 input positions
    packed = packed_examples(pairs, NumberTokenizer(), seq_len=6)
    np.testing.assert_array_equal(packed["input_ids"], [[1, 2, 3, 4, 5, 0],
                                                        [6, 7, 8, 9, 0, 0]])
    np.testing.assert_array_equal(packed["segment_ids"], [[1, 1, 2, 2, 2, 0],
                                                          [1, 1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(packed["positions"], [[0, 1, 0, 1, 2, 0],
                                                        [0, 1, 2, 3, 0, 0]])


def test_a_packed_example_scores_exactly_as_it_does_alone():
    """Attention stays within each example and positions restart: the summed completion
    loss of packed rows equals that of one example per padded row."""
    pairs = [("11 12 13", "14 15"), ("21", "22 23 24"), ("31 32", "33"), ("41", "42")]
    config = ModelConfig(family="gpt", vocab_size=100, d_model=32, num_heads=2, d_ff=64,
                         num_layers=2, max_len=16)
    objective = CausalLMObjective(GPT(config))
    padded = padded_examples(pairs, NumberTokenizer(), seq_len=8)
    packed = packed_examples(pairs, NumberTokenizer(), seq_len=12)
    assert len(packed["input_ids"]) < len(padded["input_ids"])
    params = objective.init(jax.random.key(0), padded)
    alone = objective.term_sums(params, padded, None)["lm_loss"]
    together = objective.term_sums(params, packed, None)["lm_loss"]
    np.testing.assert_allclose(together, alone, rtol=1e-5)
    # Without segments the examples would see each other and score differently.
    unsegmented = {k: v for k, v in packed.items() if k not in ("segment_ids", "positions")}
    assert abs(float(objective.term_sums(params, unsegmented, None)["lm_loss"]) -
               float(alone)) > 1e-3


def test_bad_files_are_errors(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "a", "completion": "b", "extra": 1}) + "\n")
    with pytest.raises(InputError, match="exactly the string fields"):
        read_prompt_completion(str(path))
    path.write_text(json.dumps({"prompt": "a", "completion": ""}) + "\n")
    with pytest.raises(InputError, match="empty completion"):
        read_prompt_completion(str(path))
