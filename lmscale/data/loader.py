"""Batches indexed by step, each process reading only its own rows (Grain MapDataset).

The batch for step s is a pure function of (examples, seed, s): resuming needs no seek and
reproduces the same data order. Examples are globally shuffled with a fresh permutation
each epoch; row r of global batch s is element s * global_batch_size + r of that order.
Which rows a process reads is decided by where the mesh puts them
(`lmscale.parallel.mesh.process_batch_rows`), never by the order itself.
"""

from __future__ import annotations

from collections.abc import Mapping

import grain
import numpy as np

from lmscale.errors import ConfigError, InputError


class ArrayExamples:
    """Random access over a dict of equally long arrays (a Grain data source)."""

    def __init__(self, arrays: Mapping[str, np.ndarray]):
        lengths = {len(v) for v in arrays.values()}
        if len(lengths) != 1:
            sizes = {k: len(v) for k, v in arrays.items()}
            raise ValueError(f"example arrays differ in length: {sizes}")
        self.arrays = dict(arrays)
        self.length = lengths.pop()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {k: v[index] for k, v in self.arrays.items()}


class StepBatches:
    """`batches[step]` -> this process's rows of the global batch for that step."""

    def __init__(self, source, global_batch_size: int, seed: int,
                 rows: np.ndarray | None = None, shuffle: bool = True):
        """`rows`: which rows of each global batch to read, ascending (default: all)."""
        if len(source) == 0:
            raise InputError("the dataset has no examples")
        self.rows = (np.arange(global_batch_size) if rows is None
                     else np.asarray(rows, dtype=np.int64))
        if len(self.rows) == 0 or self.rows.min() < 0 or self.rows.max() >= global_batch_size:
            raise ConfigError(f"rows {self.rows.tolist()} are not rows of a global batch of "
                              f"{global_batch_size}")
        self.num_examples = len(source)
        self.global_batch_size = global_batch_size
        dataset = grain.MapDataset.source(source)
        if shuffle:
            dataset = dataset.shuffle(seed=seed)
        self._examples = dataset.repeat()

    def __getitem__(self, step: int) -> dict[str, np.ndarray]:
        examples = [self._examples[int(i)] for i in self._global_order(step)]
        return {k: np.stack([e[k] for e in examples]) for k in examples[0]}

    def _global_order(self, step: int) -> np.ndarray:
        """[local rows] each row's position in the global order of examples."""
        return step * self.global_batch_size + self.rows

    def first_pass_weights(self, step: int) -> np.ndarray:
        """[local rows] 1.0 for this process's rows of batch `step` that lie in the first
        pass over the examples, 0.0 for those that wrap around into the next one: one pass
        of evaluation then counts every example exactly once."""
        return (self._global_order(step) < self.num_examples).astype(np.float32)

    def epochs(self, steps: int) -> float:
        return steps * self.global_batch_size / self.num_examples


def stack_examples(source, count: int) -> dict[str, np.ndarray]:
    """The first `count` examples of a source as one batch of arrays."""
    rows = [source[i] for i in range(min(count, len(source)))]
    return {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}
