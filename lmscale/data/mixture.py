"""Weighted mixtures of prepared sources, indexed by step like `StepBatches`.

`data.sources` entries may carry weights, `SOURCE@WEIGHT` ("tfds:wikipedia/20230601.en:train@0.8",
"books/*.txt@0.2"; BERT section 3.1 trained on Wikipedia and BooksCorpus). Weights are
relative and need not sum to 1. Either every entry has one (a mixture: each source is
prepared on its own and sampled at its weight) or none has (one corpus: all documents
together, as before).

Which source each position of the mixed order comes from is fixed by the weights alone,
not by chance: position k draws from the source whose running count falls behind its share
(Grain's `MapDataset.mix` interleaving, with the weights as integer proportions at 1e-6
resolution). Every batch therefore holds each source's share to within a row, and how many
examples any range of steps took from each source is a closed-form count, which is how the
realised mixture per epoch is reported without reading data. Within each source, examples
follow their own shuffled order, reshuffled each pass over that source, so a small source
repeats at its weight while a large one is still in its first pass. The batch for step s is
a pure function of (sources, weights, seed, s): resuming needs no seek.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import grain
import numpy as np

from lmscale.data.loader import Prefetch, check_rows, iterate_steps, stack_rows
from lmscale.errors import ConfigError, InputError

# Weights become integer proportions at this resolution (each at least 1).
_PROPORTION_SCALE = 10**6


def split_source_weights(entries: Sequence[str]) -> tuple[list[str], list[float] | None]:
    """`data.sources` -> (sources, weights); weights is None when no entry carries one.

    `SOURCE@WEIGHT` carries a weight when the text after the last "@" is a number; any
    other "@" is part of the source's name.
    """
    sources, weights = [], []
    for entry in entries:
        source, at, tail = entry.rpartition("@")
        try:
            weight = float(tail) if at and source else None
        except ValueError:
            weight = None
        if weight is None:
            source = entry
        elif not (math.isfinite(weight) and weight > 0):
            raise ConfigError(f"data.sources entry {entry!r}: a weight must be a positive "
                              f"number, e.g. '{source}@0.2'")
        sources.append(source)
        weights.append(weight)
    weighted = [w is not None for w in weights]
    if not any(weighted):
        return sources, None
    if not all(weighted):
        bare = [s for s, w in zip(sources, weights) if w is None]
        raise ConfigError(
            f"data.sources mixes weighted and unweighted entries ({bare} have no weight); "
            f"give every entry a weight, e.g. '{bare[0]}@0.2', for a mixture, or none for "
            "one corpus of all the sources")
    repeated = sorted({s for s in sources if sources.count(s) > 1})
    if repeated:
        raise ConfigError(f"data.sources names {repeated} more than once in a mixture; give "
                          "each source once, with the sum of its weights")
    return sources, weights


def integer_proportions(weights: Sequence[float]) -> tuple[int, ...]:
    """Relative weights as positive integers summing to about 1e6."""
    weights = np.asarray(weights, dtype=np.float64)
    if len(weights) == 0 or not (np.isfinite(weights).all() and (weights > 0).all()):
        raise ConfigError(f"mixture weights must be positive numbers, got {weights.tolist()}")
    scaled = np.rint(weights / weights.sum() * _PROPORTION_SCALE).astype(np.int64)
    return tuple(int(p) for p in np.maximum(scaled, 1))


class MixtureOrder(grain.transforms.DatasetSelectionMap):
    """Position k of the mixed order -> (source, position in that source's own order).

    The count of source j among the first n positions is nested floors over the integer
    proportions p: source 0 gets n - floor(n * (P - p0) / P) of them, and the rest are
    shared the same way among the remaining sources (the rule of Grain's `mix`). Each count
    is non-decreasing in n, grows by at most 1 per position, and is within 1 of n * p_j / P.
    """

    def __init__(self, weights: Sequence[float]):
        self.proportions = integer_proportions(weights)

    def __len__(self) -> int:
        return np.iinfo(np.int64).max

    def counts(self, n) -> np.ndarray:
        """[..., sources] how many of the first `n` positions each source fills; `n` an int
        or an int array (exact while n * 1e6 fits in int64, i.e. n < 9e12)."""
        k = np.asarray(n, dtype=np.int64)
        remaining = sum(self.proportions)
        counts = []
        for p in self.proportions:
            rest = k * (remaining - p) // remaining
            counts.append(k - rest)
            remaining -= p
            k = rest
        return np.stack(counts, axis=-1)

    def select(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """([n] source, [n] index in that source's order) of each position."""
        positions = np.asarray(positions, dtype=np.int64)
        before, after = self.counts(positions), self.counts(positions + 1)
        source = np.argmax(after - before, axis=-1)
        return source, np.take_along_axis(after, source[..., None], axis=-1)[..., 0] - 1

    def __getitem__(self, index: int) -> tuple[int, int]:
        """`select` for one position in Python integers (Grain asks once per example)."""
        before, after = index, index + 1
        remaining = sum(self.proportions)
        for source, p in enumerate(self.proportions):
            rest_before = before * (remaining - p) // remaining
            rest_after = after * (remaining - p) // remaining
            if after - rest_after != before - rest_before:
                return source, after - rest_after - 1
            remaining -= p
            before, after = rest_before, rest_after
        raise AssertionError("the last source takes every position the others leave")


def source_seed(seed: int, source: int) -> int:
    """Each source's shuffle seed: independent streams for (seed, source) pairs. (Grain
    reshuffles pass e with seed + e, so seed + source would replay one source's passes as
    another's.)"""
    return int(np.random.SeedSequence([seed, source]).generate_state(1)[0])


@dataclass(frozen=True)
class MixtureEpoch:
    """What one epoch of a mixture drew (an epoch: the steps that draw as many examples as
    all the sources hold together, the last one possibly cut short)."""

    epoch: int
    first_step: int
    end_step: int  # exclusive
    drawn: tuple[int, ...]  # examples from each source in this epoch
    passes: tuple[float, ...]  # passes over each source by the end of the epoch

    @property
    def shares(self) -> tuple[float, ...]:
        total = sum(self.drawn)
        return tuple(d / total for d in self.drawn)


class MixtureStepBatches:
    """`batches[step]` -> this process's rows of the global batch for that step, drawn from
    weighted sources; the interface of `StepBatches` for training."""

    def __init__(self, sources: Sequence, weights: Sequence[float], global_batch_size: int,
                 seed: int, rows: np.ndarray | None = None, prefetch: Prefetch | None = None,
                 names: Sequence[str] | None = None):
        """`sources`: random-access example sources (len, __getitem__) with the same fields;
        `names`: how reports call them (default: source 0, 1, ...)."""
        if len(sources) != len(weights):
            raise ConfigError(f"{len(sources)} sources but {len(weights)} weights")
        self.names = list(names) if names is not None else [f"source {j}"
                                                            for j in range(len(sources))]
        empty = [n for n, s in zip(self.names, sources) if len(s) == 0]
        if empty:
            raise InputError(f"the mixture's sources {empty} have no examples")
        _check_same_fields(sources, self.names)
        self.rows = check_rows(rows, global_batch_size)
        self.global_batch_size = global_batch_size
        self.prefetch = prefetch or Prefetch()
        self.source_sizes = tuple(len(s) for s in sources)
        self.num_examples = sum(self.source_sizes)
        self.order = MixtureOrder(weights)
        self.weights = tuple(p / sum(self.order.proportions) for p in self.order.proportions)
        shuffled = [grain.MapDataset.source(s).shuffle(seed=source_seed(seed, j)).repeat()
                    for j, s in enumerate(sources)]
        self._examples = grain.MapDataset.select_from_datasets(shuffled, self.order)

    def __getitem__(self, step: int) -> dict[str, np.ndarray]:
        positions = step * self.global_batch_size + self.rows
        return stack_rows([self._examples[int(k)] for k in positions])

    def iterate(self, start: int, stop: int) -> Iterator[dict[str, np.ndarray]]:
        """`self[step]` for steps start..stop-1, built ahead of the step per `prefetch`."""
        return iterate_steps(self.__getitem__, start, stop, self.prefetch)

    def sources_of(self, step: int) -> np.ndarray:
        """[local rows] which source each of this process's rows of batch `step` is from."""
        return self.order.select(step * self.global_batch_size + self.rows)[0]

    def drawn(self, steps: int) -> np.ndarray:
        """[sources] examples each source gave the first `steps` global batches."""
        return self.order.counts(steps * self.global_batch_size)

    def epochs(self, steps: int) -> float:
        return steps * self.global_batch_size / self.num_examples

    def realised_mixture(self, start: int, stop: int) -> list[MixtureEpoch]:
        """What steps [start, stop) draw from each source, epoch by epoch."""
        per_epoch = -(-self.num_examples // self.global_batch_size)
        result = []
        for epoch in range(start // per_epoch, -(-stop // per_epoch)):
            first, end = max(start, epoch * per_epoch), min(stop, (epoch + 1) * per_epoch)
            drawn = self.drawn(end) - self.drawn(first)
            passes = self.drawn(end) / np.asarray(self.source_sizes)
            result.append(MixtureEpoch(epoch, first, end, tuple(int(d) for d in drawn),
                                       tuple(float(p) for p in passes)))
        return result

    def describe(self, start: int, stop: int) -> list[str]:
        """Log lines: the weights asked for, then each epoch's realised shares and passes."""
        asked = ", ".join(f"{n} {w:.1%} ({s:,} examples)"
                          for n, w, s in zip(self.names, self.weights, self.source_sizes))
        lines = [f"mixture of {asked}"]
        for e in self.realised_mixture(start, stop):
            parts = ", ".join(f"{n} {share:.2%} ({d:,}; {p:.2f} passes)"
                              for n, share, d, p in zip(self.names, e.shares, e.drawn,
                                                        e.passes))
            lines.append(f"epoch {e.epoch} (steps {e.first_step}-{e.end_step - 1}): {parts}")
        return lines


def _check_same_fields(sources: Sequence, names: Sequence[str]) -> None:
    """Every source's examples must stack into one batch: same fields, shapes and dtypes."""
    def spec(source) -> dict:
        return {k: (np.shape(v), np.asarray(v).dtype) for k, v in source[0].items()}

    first = spec(sources[0])
    for name, source in zip(names[1:], sources[1:]):
        other = spec(source)
        if other != first:
            raise InputError(f"the mixture's sources hold different examples: {names[0]} "
                             f"has {first}, {name} has {other}; prepare them with the same "
                             "model, tokenizer and sequence length")
