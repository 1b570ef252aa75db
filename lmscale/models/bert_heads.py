"""Fine-tuning heads on `BertModel` (BERT section 4): span extraction and classification.

The encoder is a submodule named `bert`, as in `BertForPretraining`, so pretrained
parameters land on it by path and only the small head starts fresh.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmscale.models.bert import BertModel
from lmscale.models.config import ModelConfig
from lmscale.models.layers import Projection


class BertForQuestionAnswering(nn.Module):
    """Start and end logits per token (BERT 4.2: a start vector S and end vector E)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array,
                 attention_mask: jax.Array, deterministic: bool = True):
        """Returns (start_logits, end_logits), each [batch, length], float32."""
        cfg = self.config
        hidden, _ = BertModel(cfg, name="bert")(input_ids, token_type_ids, attention_mask,
                                                deterministic)
        logits = Projection((2,), ("embed", None), cfg.dtype, init_std=cfg.initializer_range,
                            out_dtype=jnp.float32, name="span")(hidden)  # [batch, length, 2]
        return logits[..., 0], logits[..., 1]


class BertForSequenceClassification(nn.Module):
    """Label logits from the pooled [CLS] vector (BERT 4.1), with dropout before the head."""

    config: ModelConfig
    num_labels: int

    @nn.compact
    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array,
                 attention_mask: jax.Array, deterministic: bool = True) -> jax.Array:
        """Returns logits [batch, num_labels], float32."""
        cfg = self.config
        _, pooled = BertModel(cfg, name="bert")(input_ids, token_type_ids, attention_mask,
                                                deterministic)
        pooled = nn.Dropout(cfg.dropout, deterministic=deterministic)(pooled)
        return Projection((self.num_labels,), ("embed", None), cfg.dtype,
                          init_std=cfg.initializer_range, out_dtype=jnp.float32,
                          name="classifier")(pooled)
