"""Pretraining objectives: loss functions handed to the step, not branches inside it.

An objective turns (params, batch) into *sums* of per-example quantities and says by what
count each sum is normalised. The step divides by counts taken over the whole global batch,
so gradient accumulation over micro-batches gives exactly the full-batch gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from lmscale.models import GPT, BertForPretraining, ModelConfig

Batch = dict[str, jax.Array]


def example_weights(batch: Batch) -> jax.Array:
    """[batch] float32 weight of each row: `example_weight` when the batch has one (exact
    evaluation zeroes the rows that only fill its last batch), else ones."""
    if "example_weight" in batch:
        return batch["example_weight"].astype(jnp.float32)
    return jnp.ones(batch["input_ids"].shape[:1], jnp.float32)


def _masked_sums(logits: jax.Array, labels: jax.Array, weights: jax.Array):
    """Summed cross-entropy and summed accuracy over positions with weight > 0."""
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return jnp.sum(loss * weights), jnp.sum(correct * weights)


@dataclass(frozen=True)
class CausalLMObjective:
    """GPT next-token prediction; `loss_mask` zeroes padding or prompt positions. Packed
    rows may carry `positions` and `segment_ids` (see `GPT`)."""

    model: nn.Module
    loss_terms: tuple[str, ...] = ("lm_loss",)

    def init(self, rng: jax.Array, batch: Batch):
        return self.model.init(rng, batch["input_ids"])

    def term_sums(self, params, batch: Batch, dropout_rng: jax.Array | None) -> dict:
        logits = self.model.apply(params, batch["input_ids"], positions=batch.get("positions"),
                                  segment_ids=batch.get("segment_ids"),
                                  deterministic=dropout_rng is None,
                                  rngs=None if dropout_rng is None else {"dropout": dropout_rng})
        loss, correct = _masked_sums(logits, batch["targets"], self._weights(batch))
        return {"lm_loss": loss, "lm_accuracy": correct}

    def term_counts(self, batch: Batch) -> dict:
        tokens = jnp.sum(self._weights(batch))
        return {"lm_loss": tokens, "lm_accuracy": tokens}

    @staticmethod
    def _weights(batch: Batch) -> jax.Array:
        return batch["loss_mask"].astype(jnp.float32) * example_weights(batch)[:, None]


@dataclass(frozen=True)
class BertPretrainingObjective:
    """Masked LM over the selected positions plus next-sentence prediction (BERT 3.1)."""

    model: nn.Module
    loss_terms: tuple[str, ...] = ("mlm_loss", "nsp_loss")

    def _inputs(self, batch: Batch):
        return (batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
                batch["masked_lm_positions"])

    def init(self, rng: jax.Array, batch: Batch):
        return self.model.init(rng, *self._inputs(batch))

    def term_sums(self, params, batch: Batch, dropout_rng: jax.Array | None) -> dict:
        mlm_logits, nsp_logits = self.model.apply(
            params, *self._inputs(batch), deterministic=dropout_rng is None,
            rngs=None if dropout_rng is None else {"dropout": dropout_rng})
        mlm_loss, mlm_correct = _masked_sums(mlm_logits, batch["masked_lm_ids"],
                                             self._mlm_weights(batch))
        nsp_loss, nsp_correct = _masked_sums(nsp_logits, batch["next_sentence_label"],
                                             example_weights(batch))
        return {"mlm_loss": mlm_loss, "mlm_accuracy": mlm_correct,
                "nsp_loss": nsp_loss, "nsp_accuracy": nsp_correct}

    def term_counts(self, batch: Batch) -> dict:
        masked = jnp.sum(self._mlm_weights(batch))
        examples = jnp.sum(example_weights(batch))
        return {"mlm_loss": masked, "mlm_accuracy": masked,
                "nsp_loss": examples, "nsp_accuracy": examples}

    @staticmethod
    def _mlm_weights(batch: Batch) -> jax.Array:
        return (batch["masked_lm_weights"].astype(jnp.float32)
                * example_weights(batch)[:, None])


def objective_for(model_cfg: ModelConfig):
    """The pretraining objective of a model family: next-token LM or MLM + NSP."""
    if model_cfg.family == "gpt":
        return CausalLMObjective(GPT(model_cfg))
    return BertPretrainingObjective(BertForPretraining(model_cfg))
