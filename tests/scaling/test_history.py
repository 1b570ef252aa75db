"""The history table: counts from published shapes against the announced sizes."""

import dataclasses

import pytest

from lmscale.flops import param_count
from lmscale.scaling.history import HISTORY, history_table

BY_NAME = {m.name: m for m in HISTORY}


def test_the_issue_lists_every_model():
    for name in (
        "GPT",
        "BERT-Large",
        "RoBERTa-large",
        "XLM-R Large",
        "GPT-2 1.5B",
        "Megatron-LM 8.3B",
        "T5-11B",
        "Turing-NLG",
        "GPT-3",
        "Megatron-Turing NLG",
        "Gopher",
    ):
        assert name in BY_NAME


@pytest.mark.parametrize(
    "name, total",
    [
        ("GPT", 116_534_784),  # openai-gpt as released
        ("RoBERTa-large", 355_359_744),  # roberta-large as released
        ("XLM-R Large", 559_890_432),  # xlm-roberta-large as released
        ("GPT-2 1.5B", 1_557_611_200),  # gpt2-xl as released
        ("T5-11B", 11_307_321_344),
    ],
)
def test_exact_counts(name, total):
    assert BY_NAME[name].count.total == total


def test_entries_reconcile_within_their_rounding_or_say_why():
    unreconciled = {m.name for m in HISTORY if not m.reconciles}
    assert unreconciled == {"XLM-R Large", "GPT-2 1.5B"}
    for m in HISTORY:
        assert m.source
        if not m.reconciles:
            assert m.note.startswith("Does not reconcile")


def test_gpt2_table_sizes_come_from_gpt_vocabulary():
    # The note's claim: GPT-2's Table 2 (117M, 345M, 762M, 1542M) is the GPT-2 shapes
    # counted with GPT's 40,478-token vocabulary.
    xl = BY_NAME["GPT-2 1.5B"].shape
    for d, layers, announced in (
        (768, 12, 117),
        (1024, 24, 345),
        (1280, 36, 762),
        (1600, 48, 1542),
    ):
        shape = dataclasses.replace(xl, vocab_size=40_478, d_model=d, layers=layers, heads=d // 64)
        assert round(param_count(shape).total / 1e6) == announced


def test_gopher_needs_the_relative_position_projection():
    gopher = BY_NAME["Gopher"]
    without = dataclasses.replace(gopher.shape, relative_position_projection=False)
    assert round(param_count(without).total / 1e9) == 258
    assert round(gopher.count.total / 1e9) == 280


def test_table_shows_counts_and_flags():
    table = history_table()
    for m in HISTORY:
        assert m.name in table
        assert f"{m.count.total:,}" in table
    assert table.count(" NO") == 2
    assert "1,557,611,200" in table and "1.542B" in table
