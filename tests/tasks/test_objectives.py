"""Fine-tuning objectives: the span and label losses against hand computations."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmscale.tasks.objectives import ClassificationObjective, SpanObjective


class FixedLogits(nn.Module):
    """Returns given logits whatever the inputs, so the loss alone is under test."""

    logits: tuple

    @nn.compact
    def __call__(self, input_ids, token_type_ids, attention_mask, deterministic=True):
        self.param("unused", nn.initializers.zeros, ())
        out = tuple(jnp.asarray(x) for x in self.logits)
        return out if len(out) > 1 else out[0]


def log_softmax(row):
    row = np.asarray(row, np.float64)
    return row - np.log(np.exp(row).sum())


def toy_batch(n, length=4):
    zeros = np.zeros((n, length), np.int32)
    return {"input_ids": zeros, "token_type_ids": zeros, "attention_mask": zeros + 1}


def test_span_loss_is_the_mean_of_start_and_end_cross_entropy():
    start = np.array([[2.0, 0.5, -1.0, 0.0], [0.0, 0.0, 3.0, 1.0]], np.float32)
    end = np.array([[0.1, 0.2, 0.3, 0.4], [1.0, -2.0, 0.0, 2.5]], np.float32)
    batch = toy_batch(2) | {"start_positions": np.array([0, 2]),
                            "end_positions": np.array([1, 3])}
    objective = SpanObjective(FixedLogits((start.tolist(), end.tolist())))
    params = objective.init(jax.random.key(0), batch)
    sums = objective.term_sums(params, batch, None)
    by_hand = sum(-(log_softmax(start[i])[s] + log_softmax(end[i])[e]) / 2
                  for i, (s, e) in enumerate([(0, 1), (2, 3)]))
    np.testing.assert_allclose(float(sums["span_loss"]), by_hand, rtol=1e-6)
    # Example 0 predicts start 0 (right) but end 3 (wrong); example 1 gets both right.
    assert float(sums["span_accuracy"]) == 1.0
    assert float(objective.term_counts(batch)["span_loss"]) == 2.0


def test_label_loss_and_accuracy():
    logits = np.array([[1.0, -1.0], [0.2, 0.3], [5.0, 0.0]], np.float32)
    batch = toy_batch(3) | {"labels": np.array([0, 0, 1])}
    objective = ClassificationObjective(FixedLogits((logits.tolist(),)))
    sums = objective.term_sums(objective.init(jax.random.key(0), batch), batch, None)
    by_hand = -sum(log_softmax(logits[i])[y] for i, y in enumerate([0, 0, 1]))
    np.testing.assert_allclose(float(sums["label_loss"]), by_hand, rtol=1e-6)
    assert float(sums["accuracy"]) == 1.0
