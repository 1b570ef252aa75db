"""What a run shows at its end: GPT text samples and BERT fill-mask predictions.

These are quick looks at a model, not the generation API: they re-run the full forward
pass for every new token.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lmscale.data.tokenizer import Tokenizer


def gpt_samples(model, params, tokenizer: Tokenizer, prompts: list[str], num_tokens: int,
                temperature: float = 0.8, seed: int = 0) -> list[str]:
    """Continue each prompt by temperature sampling (full forward pass per token)."""
    max_len = model.config.max_len

    @jax.jit
    def next_token(buffer, position, rng):
        logits = model.apply(params, buffer)[0, position - 1]
        return jax.random.categorical(rng, logits / temperature)

    outputs = []
    rng = jax.random.key(seed)
    for prompt in prompts:
        ids = tokenizer.encode(prompt)[-(max_len - num_tokens):] if num_tokens < max_len else []
        buffer = np.zeros((1, max_len), np.int32)
        buffer[0, : len(ids)] = ids
        position = len(ids)
        for _ in range(min(num_tokens, max_len - position)):
            rng, sub = jax.random.split(rng)
            token = int(next_token(jnp.asarray(buffer), position, sub))
            if token == tokenizer.eot_id:
                break
            buffer[0, position] = token
            position += 1
        outputs.append(tokenizer.decode(buffer[0, :position].tolist()))
    return outputs


def bert_fill_mask(model, params, tokenizer: Tokenizer, examples: dict[str, np.ndarray],
                   count: int, top_k: int = 3) -> list[str]:
    """For the first masked position of `count` held-out examples: the context with that
    token shown as [MASK], the true token and the model's top-k guesses."""
    lines = []
    for i in range(min(count, len(examples["input_ids"]))):
        row = {k: v[i : i + 1] for k, v in examples.items()}
        position = int(row["masked_lm_positions"][0, 0])
        ids = row["input_ids"].copy()
        ids[0, position] = tokenizer.mask_id
        mlm_logits, _ = model.apply(params, ids, row["token_type_ids"], row["attention_mask"],
                                    row["masked_lm_positions"][:, :1])
        guesses = np.argsort(-np.asarray(mlm_logits[0, 0]))[:top_k]
        lo, hi = max(1, position - 12), position + 12
        left = tokenizer.decode(ids[0, lo:position].tolist())
        right = tokenizer.decode([t for t in ids[0, position + 1 : hi].tolist()
                                  if t not in (tokenizer.pad_id, tokenizer.sep_id)])
        truth = tokenizer.decode([int(row["masked_lm_ids"][0, 0])])
        lines.append(f"...{left} [MASK] {right}...  true: {truth!r}  predicted: "
                     + ", ".join(repr(tokenizer.decode([int(g)])) for g in guesses))
    return lines
