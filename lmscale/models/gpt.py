"""GPT-2: a pre-LayerNorm causal decoder with learned positions and a tied LM head."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmscale.models.config import ModelConfig
from lmscale.models.layers import MLP, Embed, LayerNorm, SelfAttention, constrain, stack_layers
from lmscale.models.matmul import matmul
from lmscale.models.vocab import mask_padded_logits


def tied_logits(hidden: jax.Array, table: jax.Array, cfg: ModelConfig) -> jax.Array:
    """GPT-2's output layer: hidden [..., d_model] against every row of the token table
    [padded vocab, d_model] (weight tying, Press & Wolf 2017) -> float32 logits
    [..., padded vocab], the padding columns masked (`lmscale.models.vocab`). Matmul
    inputs take the compute dtype and accumulate in float32 (`lmscale.models.matmul`)."""
    logits = matmul(hidden, table, ((hidden.ndim - 1,), (1,)), cfg.dtype)
    return mask_padded_logits(logits, cfg.vocab_size)


class GPTBlock(nn.Module):
    config: ModelConfig
    deterministic: bool = True
    decode: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None):
        cfg = self.config
        drop = nn.Dropout(cfg.dropout, deterministic=self.deterministic)
        h = LayerNorm(cfg.layer_norm_eps, cfg.dtype, name="ln_attn")(x)
        x = x + drop(SelfAttention(cfg, causal=True, decode=self.decode,
                                         deterministic=self.deterministic, name="attn")(h, mask))
        h = LayerNorm(cfg.layer_norm_eps, cfg.dtype, name="ln_mlp")(x)
        x = x + drop(MLP(cfg, name="mlp")(h))
        return constrain(x, ("batch", "length", "act_embed")), None


class GPT(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array, positions: jax.Array | None = None,
                 attention_mask: jax.Array | None = None,
                 segment_ids: jax.Array | None = None,
                 deterministic: bool = True, decode: bool = False,
                 return_hidden: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
        """input_ids [batch, length] -> logits [batch, length, padded vocab] (float32);
        the columns from `config.vocab_size` on are padding, masked to a large negative
        value (see `lmscale.models.vocab`).

        `attention_mask` [batch, length] marks real tokens (left-padded batches); causal
        masking is always applied on top. `positions` [batch or 1, length] are per-row
        position ids (left-padded rows start later; packed examples restart at 0).
        `segment_ids` [batch, length] number the examples packed into a row: a token
        attends only within its own segment.

        `decode=True` reads and extends the `cache` collection (apply with
        `mutable=["cache"]`); see `SelfAttention`. Initialising with `decode=True` on
        input of length L creates a cache of L slots.

        `return_hidden=True` returns, instead of the logits, the final hidden states
        [batch, length, d_model] (after `ln_f`, compute dtype) and the tied token table
        [padded vocab, d_model] (float32): `tied_logits` of the two is the logits, for a
        loss that computes them a few positions at a time (`CausalLMObjective` with
        `config.loss_chunk`).
        """
        cfg = self.config
        if positions is None:
            positions = jnp.arange(input_ids.shape[1])[None, :]
        wte = Embed(cfg.padded_vocab_size, cfg.d_model, ("vocab", "embed"), cfg.dtype,
                    cfg.initializer_range, name="wte")
        wpe = Embed(cfg.max_len, cfg.d_model, ("positions", "embed"), cfg.dtype,
                    0.01, name="wpe")
        x = wte(input_ids) + wpe(positions)
        x = nn.Dropout(cfg.dropout, deterministic=deterministic)(x)
        x = constrain(x, ("batch", "length", "act_embed"))
        mask = None if attention_mask is None else attention_mask[:, None, None, :].astype(bool)
        if segment_ids is not None:
            if decode:
                raise ValueError("segment_ids (packed rows) are for training, not decoding")
            same = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]
            mask = same if mask is None else mask & same
        x, _ = stack_layers(GPTBlock, cfg, "blocks", deterministic=deterministic,
                            decode=decode)(x, mask)
        x = LayerNorm(cfg.layer_norm_eps, cfg.dtype, name="ln_f")(x)
        if return_hidden:
            return x, wte.embedding
        return constrain(tied_logits(x, wte.embedding, cfg), ("batch", "length", "act_vocab"))
