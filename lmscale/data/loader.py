"""Batches indexed by step, each process reading only its own rows (Grain MapDataset).

The batch for step s is a pure function of (examples, seed, s): resuming needs no seek and
reproduces the same data order. Examples are globally shuffled with a fresh permutation
each epoch; element k of the global order goes to process k % process_count.
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

    def __init__(self, source, global_batch_size: int, seed: int, process_index: int = 0,
                 process_count: int = 1, shuffle: bool = True):
        if len(source) == 0:
            raise InputError("the dataset has no examples")
        if global_batch_size % process_count:
            raise ConfigError(
                f"train.batch_size ({global_batch_size}) must be divisible by the number of "
                f"processes ({process_count})"
            )
        self.num_examples = len(source)
        self.global_batch_size = global_batch_size
        self._process_index, self._process_count = process_index, process_count
        dataset = grain.MapDataset.source(source)
        if shuffle:
            dataset = dataset.shuffle(seed=seed)
        dataset = dataset.repeat()[process_index::process_count]
        self._batches = dataset.batch(global_batch_size // process_count)

    def __getitem__(self, step: int) -> dict[str, np.ndarray]:
        return self._batches[step]

    def first_pass_weights(self, step: int) -> np.ndarray:
        """[local rows] 1.0 for this process's rows of batch `step` that lie in the first
        pass over the examples, 0.0 for those that wrap around into the next one: one pass
        of evaluation then counts every example exactly once."""
        local = self.global_batch_size // self._process_count
        order = (step * local + np.arange(local)) * self._process_count + self._process_index
        return (order < self.num_examples).astype(np.float32)

    def epochs(self, steps: int) -> float:
        return steps * self.global_batch_size / self.num_examples


def stack_examples(source, count: int) -> dict[str, np.ndarray]:
    """The first `count` examples of a source as one batch of arrays."""
    rows = [source[i] for i in range(min(count, len(source)))]
    return {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}
