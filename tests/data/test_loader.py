"""Step-indexed batches: each process's rows, the weights that make one evaluation pass
count every example once, and prefetching that changes when a batch is built, not what it
holds."""

import numpy as np
import pytest

from lmscale.data.loader import ArrayExamples, Prefetch, StepBatches
from lmscale.errors import ConfigError


def test_processes_share_each_global_batch_and_weight_only_the_first_pass():
    source = ArrayExamples({"x": np.arange(10)})
    whole = StepBatches(source, 8, seed=0, shuffle=False)
    halves = [StepBatches(source, 8, seed=0, rows=np.arange(p * 4, p * 4 + 4), shuffle=False)
              for p in range(2)]
    seen, weights = [], []
    for step in range(2):
        # The rows of the two halves, in order, are the global batch itself.
        together = np.concatenate([h[step]["x"] for h in halves])
        assert together.tolist() == whole[step]["x"].tolist()
        for batches in halves:
            seen.append(batches[step]["x"])
            weights.append(batches.first_pass_weights(step))
    seen, weights = np.concatenate(seen), np.concatenate(weights)
    assert seen.tolist() == list(range(10)) + list(range(6))
    assert sorted(seen[weights > 0].tolist()) == list(range(10))
    assert weights.sum() == 10


def test_which_rows_a_process_reads_does_not_change_the_global_order():
    source = ArrayExamples({"x": np.arange(12), "y": np.arange(12) * 10})
    whole = StepBatches(source, 4, seed=3)
    scattered = StepBatches(source, 4, seed=3, rows=np.array([0, 3]))
    for step in range(6):  # two epochs, each its own shuffle
        assert scattered[step]["x"].tolist() == whole[step]["x"][[0, 3]].tolist()
        assert (scattered[step]["y"] == scattered[step]["x"] * 10).all()
    # Step 3 wraps into the second pass: global rows 12 and 15 are not first-pass rows.
    assert whole.first_pass_weights(2).tolist() == [1, 1, 1, 1]
    assert scattered.first_pass_weights(3).tolist() == [0, 0]


def test_rows_outside_the_global_batch_are_refused():
    with pytest.raises(ConfigError, match="not rows of a global batch of 4"):
        StepBatches(ArrayExamples({"x": np.arange(12)}), 4, seed=0, rows=np.array([2, 4]))


@pytest.mark.parametrize("prefetch", [Prefetch(batches=0), Prefetch(batches=3),
                                      Prefetch(batches=2, workers=2)],
                         ids=["in-step", "threads", "worker-processes"])
def test_prefetched_batches_are_the_step_indexed_batches_from_any_start(prefetch):
    # 10 examples in batches of 4 over 9 steps: 3.6 epochs, each with its own shuffle.
    source = ArrayExamples({"x": np.arange(10), "y": np.arange(10) * 10})
    batches = StepBatches(source, 4, seed=5, rows=np.array([1, 2, 3]), prefetch=prefetch)
    expected = [batches[step] for step in range(9)]
    for start in (0, 6):  # from the beginning, and as a run resumed at step 6 reads them
        stream = batches.iterate(start, 9)
        got = list(stream)
        stream.close()
        assert len(got) == 9 - start
        for step, batch in zip(range(start, 9), got):
            assert batch["x"].tolist() == expected[step]["x"].tolist()
            assert batch["y"].tolist() == (batch["x"] * 10).tolist()
    # The steps after 6 are not the steps 0..2 again: the order really depends on the step.
    assert expected[6]["x"].tolist() != expected[0]["x"].tolist()


def test_a_prefetching_stream_stopped_early_can_be_closed():
    batches = StepBatches(ArrayExamples({"x": np.arange(50)}), 5, seed=0,
                          prefetch=Prefetch(batches=4))
    stream = batches.iterate(3, 1000)
    assert next(stream)["x"].tolist() == batches[3]["x"].tolist()
    stream.close()  # what `run_loop` does when it stops early (preemption, an error)
    with pytest.raises(StopIteration):
        next(stream)


def test_negative_prefetch_settings_name_the_config_keys():
    with pytest.raises(ConfigError, match="train.prefetch_batches"):
        Prefetch(batches=-1)
