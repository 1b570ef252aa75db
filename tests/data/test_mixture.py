"""Weighted mixtures of sources: weights followed, reproducible from the seed, rows shared
by processes, the realised mixture reported, and `data.sources` weights parsed."""

import numpy as np
import pytest

from lmscale.data.loader import ArrayExamples, Prefetch
from lmscale.data.mixture import (
    MixtureOrder, MixtureStepBatches, integer_proportions, split_source_weights,
)
from lmscale.errors import ConfigError, InputError


def _two_sources(wiki: int = 100, books: int = 37):
    """A 'wiki' and a 'books' source of so many examples; `source` says which an example
    is from, `x` which example of it."""
    return [ArrayExamples({"x": np.arange(wiki), "source": np.zeros(wiki, np.int64)}),
            ArrayExamples({"x": np.arange(books), "source": np.ones(books, np.int64)})]


def test_a_weighted_mixture_follows_its_weights_and_is_reproducible_from_the_seed():
    # (Grain's index shuffle is slow on tiny ranges: sources of 1,000s keep this quick.)
    mixture = MixtureStepBatches(_two_sources(1000, 370), [0.8, 0.2], 16, seed=1)
    batches = [mixture[step] for step in range(1000)]
    sources = np.concatenate([b["source"] for b in batches])
    assert len(sources) == 16_000
    assert abs((sources == 1).mean() - 0.2) < 0.02
    # Every batch holds each source's share to within a row (16 x 0.2 = 3.2 rows).
    assert {int((b["source"] == 1).sum()) for b in batches} == {3, 4}
    # Within each source, every pass is a fresh permutation of it: books, 370 examples,
    # is read 8.6 times over and each whole pass holds each book once.
    books = np.concatenate([b["x"][b["source"] == 1] for b in batches])
    assert len(books) == 3200
    for first in range(0, 370 * 8, 370):
        assert sorted(books[first:first + 370].tolist()) == list(range(370))
    assert books[:370].tolist() != books[370:740].tolist()
    # The same seed gives the same batches, at any step and in any order of asking.
    again = MixtureStepBatches(_two_sources(1000, 370), [0.8, 0.2], 16, seed=1)
    for step in (999, 0, 517):
        assert again[step]["x"].tolist() == batches[step]["x"].tolist()
        assert again[step]["source"].tolist() == batches[step]["source"].tolist()
    # Another seed: other examples, in the same places (the composition is the weights').
    other = MixtureStepBatches(_two_sources(1000, 370), [0.8, 0.2], 16, seed=2)
    assert other[0]["x"].tolist() != batches[0]["x"].tolist()
    assert other[0]["source"].tolist() == batches[0]["source"].tolist()


def test_rows_split_across_processes_reassemble_to_the_global_batch():
    whole = MixtureStepBatches(_two_sources(), [3, 1], 8, seed=0)
    halves = [MixtureStepBatches(_two_sources(), [3, 1], 8, seed=0,
                                 rows=np.arange(p * 4, p * 4 + 4)) for p in range(2)]
    scattered = MixtureStepBatches(_two_sources(), [3, 1], 8, seed=0, rows=np.array([1, 6]))
    for step in (0, 1, 40, 41):  # 40 and 41 are past wiki's and books' first passes
        for key in ("x", "source"):
            together = np.concatenate([h[step][key] for h in halves])
            assert together.tolist() == whole[step][key].tolist()
            assert scattered[step][key].tolist() == whole[step][key][[1, 6]].tolist()
        assert scattered.sources_of(step).tolist() == scattered[step]["source"].tolist()


def test_prefetched_mixture_batches_match_from_any_start():
    mixture = MixtureStepBatches(_two_sources(), [0.8, 0.2], 8, seed=3,
                                 prefetch=Prefetch(batches=3))
    stream = mixture.iterate(25, 30)  # a run resumed at step 25
    got = list(stream)
    stream.close()
    assert [b["x"].tolist() for b in got] == [mixture[s]["x"].tolist() for s in range(25, 30)]


def test_the_order_counts_agree_with_position_by_position_selection():
    order = MixtureOrder([0.5, 0.2, 0.3])
    assert order.proportions == (500_000, 200_000, 300_000)
    seen = np.zeros(3, np.int64)
    for position in range(3000):
        source, index = order[position]
        assert index == seen[source]  # each source's own order is read front to back
        seen[source] += 1
        assert order.counts(position + 1).tolist() == seen.tolist()
    assert seen.tolist() == [1500, 600, 900]
    # Counts of many prefixes at once, as the per-epoch report uses them.
    assert order.counts(np.array([0, 10, 3000])).tolist() == [[0, 0, 0], [5, 2, 3],
                                                              [1500, 600, 900]]


def test_the_realised_mixture_is_reported_per_epoch():
    mixture = MixtureStepBatches(_two_sources(), [0.8, 0.2], 16, seed=0,
                                 names=["wiki", "books"])
    # 137 examples in all: an epoch is 9 steps of 16.
    epochs = mixture.realised_mixture(0, 20)
    assert [(e.epoch, e.first_step, e.end_step) for e in epochs] == [(0, 0, 9), (1, 9, 18),
                                                                     (2, 18, 20)]
    assert [e.drawn for e in epochs] == [(116, 28), (115, 29), (25, 7)]
    assert epochs[0].shares[1] == pytest.approx(28 / 144)
    # Passes by the end of each epoch: books (37) runs ahead of wiki (100) at weight 0.2.
    assert epochs[1].passes == pytest.approx((231 / 100, 57 / 37))
    # Resuming at step 12 reports from there; the counts are the same closed-form ones.
    assert mixture.realised_mixture(12, 20)[0].drawn == (
        tuple(int(d) for d in mixture.drawn(18) - mixture.drawn(12)))
    lines = mixture.describe(0, 20)
    assert lines[0] == "mixture of wiki 80.0% (100 examples), books 20.0% (37 examples)"
    assert lines[1] == ("epoch 0 (steps 0-8): wiki 80.56% (116; 1.16 passes), "
                        "books 19.44% (28; 0.76 passes)")


def test_sources_that_cannot_share_a_batch_are_refused():
    wiki, _ = _two_sources()
    longer = ArrayExamples({"x": np.zeros((5, 2), np.int64), "source": np.ones(5, np.int64)})
    with pytest.raises(InputError, match="hold different examples"):
        MixtureStepBatches([wiki, longer], [1, 1], 4, seed=0)
    with pytest.raises(InputError, match=r"\['b'\] have no examples"):
        MixtureStepBatches([wiki, ArrayExamples({"x": np.arange(0)})], [1, 1], 4, seed=0,
                           names=["a", "b"])


def test_source_weights_in_data_sources():
    assert split_source_weights(["a.txt", "tfds:c4/en:train"]) == (
        ["a.txt", "tfds:c4/en:train"], None)
    assert split_source_weights(["tfds:wikipedia/20230601.en:train@0.8", "books/*.txt@0.2"]) == (
        ["tfds:wikipedia/20230601.en:train", "books/*.txt"], [0.8, 0.2])
    # An "@" not followed by a number is part of the name.
    assert split_source_weights(["gs://b/v@2/x.txt@3", "me@host.txt@1"]) == (
        ["gs://b/v@2/x.txt", "me@host.txt"], [3.0, 1.0])
    assert split_source_weights(["notes@home.txt"]) == (["notes@home.txt"], None)
    with pytest.raises(ConfigError, match=r"give every entry a weight, e.g. 'b.txt@0.2'"):
        split_source_weights(["a.txt@0.8", "b.txt"])
    with pytest.raises(ConfigError, match="a weight must be a positive number"):
        split_source_weights(["a.txt@0", "b.txt@1"])
    with pytest.raises(ConfigError, match="a weight must be a positive number"):
        split_source_weights(["a.txt@nan"])
    with pytest.raises(ConfigError, match="more than once"):
        split_source_weights(["a.txt@1", "a.txt@2"])
    # Weights are relative: 4:1 is 80/20.
    assert integer_proportions([4, 1]) == (800_000, 200_000)
