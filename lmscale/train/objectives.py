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
from lmscale.models.gpt import tied_logits
from lmscale.models.layers import constrain

Batch = dict[str, jax.Array]


def example_weights(batch: Batch) -> jax.Array:
    """[batch] float32 weight of each row: `example_weight` when the batch has one (exact
    evaluation zeroes the rows that only fill its last batch), else ones."""
    if "example_weight" in batch:
        return batch["example_weight"].astype(jnp.float32)
    return jnp.ones(batch["input_ids"].shape[:1], jnp.float32)


def _masked_sums(logits: jax.Array, labels: jax.Array, weights: jax.Array):
    """Summed cross-entropy and summed accuracy over positions with weight > 0.

    A position is correct when its label's logit is the largest: the maximum is the one
    the softmax computes anyway, where an argmax would be one more pass over the logits
    (the largest tensor of a GPT step). A tie at the top counts as correct."""
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    label_logit = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
    correct = (label_logit >= jnp.max(logits, axis=-1)).astype(jnp.float32)
    return jnp.sum(loss * weights), jnp.sum(correct * weights)


def _chunked_lm_sums(hidden: jax.Array, table: jax.Array, labels: jax.Array,
                     weights: jax.Array, cfg: ModelConfig):
    """`_masked_sums` of GPT's logits, `tied_logits(hidden, table)`, computed
    `cfg.loss_chunk` positions at a time: hidden [batch, length, d_model], table
    [padded vocab, d_model], labels and weights [batch, length].

    Each chunk is checkpointed, so the backward pass recomputes its logits instead of
    saving them: at most one chunk's [batch, chunk, vocab] float32 logits (and their
    gradient) are alive, for one more head matmul per step. A length the chunk does not
    divide is padded with positions of weight 0, which add nothing to either sum.
    """
    batch, length = labels.shape
    chunk = cfg.loss_chunk
    chunks = -(-length // chunk)
    pad = chunks * chunk - length
    if pad:
        hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
        labels, weights = (jnp.pad(x, ((0, 0), (0, pad))) for x in (labels, weights))

    def by_chunk(x):  # [batch, chunks * chunk, ...] -> [chunks, batch, chunk, ...]
        return jnp.swapaxes(x.reshape(batch, chunks, chunk, *x.shape[2:]), 0, 1)


    @jax.checkpoint
    def chunk_sums(table, hidden, labels, weights):
        hidden = constrain(hidden, ("batch", "length", "act_embed"))
        logits = constrain(tied_logits(hidden, table, cfg), ("batch", "length", "act_vocab"))
        return _masked_sums(logits, labels, weights)

    def add_chunk(totals, inputs):
        loss, correct = chunk_sums(table, *inputs)
        return (totals[0] + loss, totals[1] + correct), None

    zero = jnp.zeros((), jnp.float32)
    # Unrolled with the layers (`scan_layers=False`), so that XLA's cost analysis, which
    # counts a loop body once, counts every chunk (`lmscale plan`'s FLOPs).
    (loss, correct), _ = jax.lax.scan(
        add_chunk, (zero, zero), (by_chunk(hidden), by_chunk(labels), by_chunk(weights)),
        unroll=not cfg.scan_layers)
    return loss, correct


@dataclass(frozen=True)
class CausalLMObjective:
    """GPT next-token prediction; `loss_mask` zeroes padding or prompt positions. Packed
    rows may carry `positions` and `segment_ids` (see `GPT`). With the model's
    `loss_chunk` set (and shorter than the rows), the logits are computed a chunk of
    positions at a time (`_chunked_lm_sums`); the sums equal the whole-logits ones."""

    model: nn.Module
    loss_terms: tuple[str, ...] = ("lm_loss",)

    def init(self, rng: jax.Array, batch: Batch):
        return self.model.init(rng, batch["input_ids"])

    def term_sums(self, params, batch: Batch, dropout_rng: jax.Array | None) -> dict:
        cfg = self.model.config
        chunked = 0 < cfg.loss_chunk < batch["input_ids"].shape[1]
        outputs = self.model.apply(params, batch["input_ids"],
                                   positions=batch.get("positions"),
                                   segment_ids=batch.get("segment_ids"),
                                   deterministic=dropout_rng is None, return_hidden=chunked,
                                   rngs=None if dropout_rng is None else {"dropout": dropout_rng})
        targets, weights = batch["targets"], self._weights(batch)
        if chunked:
            loss, correct = _chunked_lm_sums(*outputs, targets, weights, cfg)
        else:
            loss, correct = _masked_sums(outputs, targets, weights)
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
