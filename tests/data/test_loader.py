"""Step-indexed batches: each process's rows, and the weights that make one evaluation
pass count every example once."""

import numpy as np

from lmscale.data.loader import ArrayExamples, StepBatches


def test_processes_share_each_global_batch_and_weight_only_the_first_pass():
    source = ArrayExamples({"x": np.arange(10)})
    per_process = [StepBatches(source, 8, seed=0, process_index=p, process_count=2,
                               shuffle=False) for p in range(2)]
    seen, weights = [], []
    for step in range(2):
        for batches in per_process:
            seen.append(batches[step]["x"])
            weights.append(batches.first_pass_weights(step))
    seen, weights = np.concatenate(seen), np.concatenate(weights)
    assert sorted(seen[weights > 0].tolist()) == list(range(10))
    assert weights.sum() == 10
