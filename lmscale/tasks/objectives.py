"""Fine-tuning objectives for BERT heads, in the protocol of `lmscale.train.objectives`:
summed per-example terms and the counts they are averaged by."""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from lmscale.train.objectives import example_weights

Batch = dict[str, jax.Array]
ENCODER_INPUTS = ("input_ids", "token_type_ids", "attention_mask")


def encoder_inputs(batch: Batch) -> tuple[jax.Array, ...]:
    return tuple(batch[k] for k in ENCODER_INPUTS)


def _apply(model: nn.Module, params, batch: Batch, dropout_rng: jax.Array | None):
    return model.apply(params, *encoder_inputs(batch), deterministic=dropout_rng is None,
                       rngs=None if dropout_rng is None else {"dropout": dropout_rng})


@dataclass(frozen=True)
class SpanObjective:
    """SQuAD: the mean of start and end cross-entropy over all positions, as
    google-research/bert `run_squad.py` (`total_loss = (start_loss + end_loss) / 2`)."""

    model: nn.Module  # BertForQuestionAnswering
    loss_terms: tuple[str, ...] = ("span_loss",)

    def init(self, rng: jax.Array, batch: Batch):
        return self.model.init(rng, *encoder_inputs(batch))

    def term_sums(self, params, batch: Batch, dropout_rng: jax.Array | None) -> dict:
        start_logits, end_logits = _apply(self.model, params, batch, dropout_rng)
        start, end = batch["start_positions"], batch["end_positions"]
        loss = (optax.softmax_cross_entropy_with_integer_labels(start_logits, start)
                + optax.softmax_cross_entropy_with_integer_labels(end_logits, end)) / 2
        exact = ((jnp.argmax(start_logits, -1) == start)
                 & (jnp.argmax(end_logits, -1) == end)).astype(jnp.float32)
        w = example_weights(batch)
        return {"span_loss": jnp.sum(loss * w), "span_accuracy": jnp.sum(exact * w)}

    def term_counts(self, batch: Batch) -> dict:
        n = jnp.sum(example_weights(batch))
        return {"span_loss": n, "span_accuracy": n}


@dataclass(frozen=True)
class ClassificationObjective:
    """Cross-entropy of the label given the pooled [CLS] vector."""

    model: nn.Module  # BertForSequenceClassification
    loss_terms: tuple[str, ...] = ("label_loss",)

    def init(self, rng: jax.Array, batch: Batch):
        return self.model.init(rng, *encoder_inputs(batch))

    def term_sums(self, params, batch: Batch, dropout_rng: jax.Array | None) -> dict:
        logits = _apply(self.model, params, batch, dropout_rng)
        labels = batch["labels"]
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
        w = example_weights(batch)
        return {"label_loss": jnp.sum(loss * w), "accuracy": jnp.sum(correct * w)}

    def term_counts(self, batch: Batch) -> dict:
        n = jnp.sum(example_weights(batch))
        return {"label_loss": n, "accuracy": n}
