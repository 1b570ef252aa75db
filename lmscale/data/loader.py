"""Batches indexed by step, each process reading only its own rows (Grain MapDataset).

The batch for step s is a pure function of (examples, seed, s): resuming needs no seek and
reproduces the same data order. Examples are globally shuffled with a fresh permutation
each epoch; row r of global batch s is element s * global_batch_size + r of that order.
Which rows a process reads is decided by where the mesh puts them
(`lmscale.parallel.mesh.process_batch_rows`), never by the order itself.

Training reads through `iterate(start, stop)`, which assembles the next batches on Grain
threads (or worker processes) while the device runs the current step. Each of those
batches is still `batches[step]`, computed from the step number alone, so prefetching
changes when a batch is built, never what it holds, and a resumed run starts its iterator
at the restored step without reading any earlier batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import grain
import numpy as np
from absl import flags as absl_flags

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


@dataclass(frozen=True)
class Prefetch:
    """How batch assembly overlaps the device step (`train.prefetch_batches`,
    `train.loader_workers`)."""

    # Batches assembled ahead of the one the step is using, each on its own Grain thread;
    # 0 builds each batch when the step asks for it.
    batches: int = 2
    # Grain worker processes (`mp_prefetch`), each assembling every `workers`-th batch,
    # for when one core cannot keep up: reading and decoding records example by example
    # is Python work that threads share under the GIL. 0 = threads of this process only.
    workers: int = 0

    def __post_init__(self):
        if self.batches < 0 or self.workers < 0:
            raise ConfigError(f"train.prefetch_batches ({self.batches}) and "
                              f"train.loader_workers ({self.workers}) must be >= 0")


def iterate_steps(batch_at: Callable[[int], dict[str, np.ndarray]], start: int, stop: int,
                  prefetch: Prefetch) -> Iterator[dict[str, np.ndarray]]:
    """`batch_at(step)` for steps start..stop-1, in order, built ahead per `prefetch`.

    A Grain MapDataset of step numbers mapped through `batch_at`: Grain's read threads
    (`ReadOptions`) and worker processes (`mp_prefetch`, which deals out consecutive steps
    to the workers in turn and reads them back in order) only change who builds a batch.
    Close the generator when done: that stops the threads or processes behind it.
    """
    if prefetch.batches == 0 and prefetch.workers == 0:
        for step in range(start, stop):
            yield batch_at(step)
        return
    steps = grain.MapDataset.range(start, stop).map(batch_at)
    ahead = max(prefetch.batches, 1)
    batches = steps.to_iter_dataset(grain.ReadOptions(num_threads=ahead,
                                                      prefetch_buffer_size=ahead))
    if prefetch.workers:
        # Grain 0.2.18 reads an absl flag when it starts workers, which fails in a program
        # that never parsed absl flags, as `lmscale` does not (google/grain#1355, fixed
        # upstream by #1362): their defaults are what we want.
        if not absl_flags.FLAGS.is_parsed():
            absl_flags.FLAGS.mark_as_parsed()
        # Batches come back pickled rather than in shared memory: a copy of a few MB per
        # step either way, and Grain frees shared memory on a thread of its own that an
        # exiting program does not wait for (the resource tracker then warns of leaks).
        batches = grain.experimental.WithOptionsIterDataset(
            batches, grain.experimental.DatasetOptions(min_shm_size=np.iinfo(np.int64).max))
        batches = batches.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=prefetch.workers,
            per_worker_buffer_size=max(1, -(-prefetch.batches // prefetch.workers))))
    iterator = iter(batches)
    try:
        yield from iterator
    finally:
        iterator.close()


class StepBatches:
    """`batches[step]` -> this process's rows of the global batch for that step."""

    def __init__(self, source, global_batch_size: int, seed: int,
                 rows: np.ndarray | None = None, shuffle: bool = True,
                 prefetch: Prefetch | None = None):
        """`rows`: which rows of each global batch to read, ascending (default: all).
        `prefetch`: how `iterate` builds batches ahead of the step (default `Prefetch()`)."""
        if len(source) == 0:
            raise InputError("the dataset has no examples")
        self.rows = check_rows(rows, global_batch_size)
        self.num_examples = len(source)
        self.global_batch_size = global_batch_size
        self.prefetch = prefetch or Prefetch()
        dataset = grain.MapDataset.source(source)
        if shuffle:
            dataset = dataset.shuffle(seed=seed)
        self._examples = dataset.repeat()

    def __getitem__(self, step: int) -> dict[str, np.ndarray]:
        return stack_rows([self._examples[int(i)] for i in self._global_order(step)])

    def iterate(self, start: int, stop: int) -> Iterator[dict[str, np.ndarray]]:
        """`self[step]` for steps start..stop-1, built ahead of the step per `prefetch`."""
        return iterate_steps(self.__getitem__, start, stop, self.prefetch)

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


def check_rows(rows: np.ndarray | None, global_batch_size: int) -> np.ndarray:
    """[local rows] `rows` as int64 (default: every row), refused unless each is a row of
    the global batch."""
    rows = np.arange(global_batch_size) if rows is None else np.asarray(rows, dtype=np.int64)
    if len(rows) == 0 or rows.min() < 0 or rows.max() >= global_batch_size:
        raise ConfigError(f"rows {rows.tolist()} are not rows of a global batch of "
                          f"{global_batch_size}")
    return rows


def stack_rows(examples: list[dict]) -> dict[str, np.ndarray]:
    """Example dicts -> one dict of arrays, the examples along a new first axis."""
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def stack_examples(source, count: int) -> dict[str, np.ndarray]:
    """The first `count` examples of a source as one batch of arrays."""
    rows = [source[i] for i in range(min(count, len(source)))]
    return {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}
