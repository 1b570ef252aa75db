"""BERT: a post-LayerNorm encoder with token, position and segment embeddings.

`BertModel` is the encoder + pooler (what checkpoints hold and fine-tuning starts from);
`BertForPretraining` adds the masked-LM and next-sentence heads (BERT section 3.1).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmscale.models.config import ModelConfig
from lmscale.models.layers import (
    MLP, Embed, LayerNorm, Projection, SelfAttention, constrain, stack_layers,
)
from lmscale.models.vocab import mask_padded_logits


class BertBlock(nn.Module):
    config: ModelConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None):
        cfg = self.config
        drop = nn.Dropout(cfg.dropout, deterministic=self.deterministic)
        x = LayerNorm(cfg.layer_norm_eps, cfg.dtype, name="ln_attn")(
            x + drop(SelfAttention(cfg, causal=False, deterministic=self.deterministic,
                                  name="attn")(x, mask)))
        x = LayerNorm(cfg.layer_norm_eps, cfg.dtype, name="ln_mlp")(
            x + drop(MLP(cfg, name="mlp")(x)))
        return constrain(x, ("batch", "length", "act_embed")), None


class BertModel(nn.Module):
    config: ModelConfig

    def setup(self):
        cfg = self.config
        self.word_embeddings = Embed(cfg.padded_vocab_size, cfg.d_model, ("vocab", "embed"),
                                     cfg.dtype, cfg.initializer_range)
        self.position_embeddings = Embed(cfg.max_len, cfg.d_model, ("positions", "embed"),
                                         cfg.dtype, cfg.initializer_range)
        self.type_embeddings = Embed(cfg.type_vocab_size, cfg.d_model, (None, "embed"),
                                     cfg.dtype, cfg.initializer_range)
        self.ln_embed = LayerNorm(cfg.layer_norm_eps, cfg.dtype)
        self.pooler = Projection((cfg.d_model,), ("embed", "embed_out"), cfg.dtype,
                                 init_std=cfg.initializer_range)

    @nn.compact
    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array,
                 attention_mask: jax.Array, deterministic: bool = True):
        """Returns (hidden [batch, length, d_model], pooled [CLS] [batch, d_model])."""
        cfg = self.config
        positions = jnp.arange(input_ids.shape[1])[None, :]
        x = (self.word_embeddings(input_ids) + self.position_embeddings(positions)
             + self.type_embeddings(token_type_ids))
        x = nn.Dropout(cfg.dropout, deterministic=deterministic)(self.ln_embed(x))
        x = constrain(x, ("batch", "length", "act_embed"))
        mask = attention_mask[:, None, None, :].astype(bool)
        x, _ = stack_layers(BertBlock, cfg, "blocks", deterministic=deterministic)(x, mask)
        pooled = jnp.tanh(self.pooler(x[:, 0]))
        return x, pooled


class BertForPretraining(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, input_ids, token_type_ids, attention_mask, masked_lm_positions,
                 deterministic: bool = True):
        """Returns (MLM logits [batch, predictions, padded vocab], NSP logits [batch, 2]),
        float32; MLM columns from `config.vocab_size` on are masked padding.

        MLM logits are computed only at `masked_lm_positions`, as the original BERT code
        does, which saves the vocabulary projection for the other 85% of tokens.
        """
        cfg = self.config
        bert = BertModel(cfg, name="bert")
        hidden, pooled = bert(input_ids, token_type_ids, attention_mask, deterministic)
        picked = jnp.take_along_axis(hidden, masked_lm_positions[..., None], axis=1)
        h = Projection((cfg.d_model,), ("embed", "embed_out"), cfg.dtype,
                       init_std=cfg.initializer_range, name="mlm_transform")(picked)
        h = LayerNorm(cfg.layer_norm_eps, cfg.dtype, name="mlm_ln")(nn.gelu(h, approximate=False))
        # Output weights tied to the word embeddings, plus a per-token bias (BERT's
        # `output_bias`).
        mlm_bias = self.param("mlm_bias", nn.with_logical_partitioning(
            nn.initializers.zeros, ("vocab",)), (cfg.padded_vocab_size,), jnp.float32)
        mlm_logits = mask_padded_logits(bert.word_embeddings.attend(h) + mlm_bias,
                                        cfg.vocab_size)
        nsp_logits = Projection((2,), ("embed", None), cfg.dtype, init_std=cfg.initializer_range,
                                out_dtype=jnp.float32, name="nsp")(pooled)
        return mlm_logits, nsp_logits
