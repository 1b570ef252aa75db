"""Autoregressive decoding for `GPT`: one prefill pass, then one token per loop step.

Everything here is a pure function of arrays and runs inside one `jax.jit`: the prompt
batch is left-padded to a fixed length, the loop is a `lax.while_loop` over a fixed-size
token buffer, and the sampling settings are traced values, so neither new tokens nor new
settings recompile. The logits are as wide as the padded vocabulary (its padding masked,
see `lmscale.models.vocab`), and draws depend only on the real vocabulary's logits: the
same seed samples the same tokens whatever the padding. With `use_cache=False` each step
re-runs the full forward pass over the whole buffer instead of reading the KV cache: the
reference that the cache must equal and the baseline the benchmark compares against.
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen. temperature 0 = greedy (argmax)."""

    temperature: float = 0.0
    top_k: int = 0  # keep the k most likely tokens; 0 = all
    top_p: float = 1.0  # keep the smallest set whose probability reaches top_p (nucleus)
    seed: int = 0

    def arrays(self) -> dict[str, jax.Array]:
        return {"temperature": jnp.float32(self.temperature), "top_k": jnp.int32(self.top_k),
                "top_p": jnp.float32(self.top_p)}


def filter_logits(logits: jax.Array, top_k: jax.Array, top_p: jax.Array) -> jax.Array:
    """logits [batch, vocab] with every token outside the top-k / top-p set at -inf."""
    descending = jnp.sort(logits, axis=-1)[:, ::-1]
    vocab = logits.shape[-1]
    k = jnp.where(top_k > 0, jnp.minimum(top_k, vocab), vocab)
    kth_largest = jnp.take(descending, k - 1, axis=-1)[:, None]
    descending = jnp.where(jnp.arange(vocab)[None, :] < k, descending, -jnp.inf)
    # Nucleus (Holtzman et al. 2020): keep a token if the mass strictly before it in
    # descending order is still below top_p, so the most likely token always survives.
    probs = jax.nn.softmax(descending, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    kept = jnp.where(mass_before < top_p, descending, jnp.inf)
    threshold = jnp.maximum(jnp.min(kept, axis=-1, keepdims=True), kth_largest)
    return jnp.where(logits >= threshold, logits, -jnp.inf)


def choose_tokens(logits: jax.Array, rng: jax.Array, sampling: dict[str, jax.Array],
                  vocab_size: int | None = None) -> jax.Array:
    """logits [batch, padded vocab] -> token ids [batch]: argmax when temperature is 0, else
    a draw. Columns from `vocab_size` (default: all columns are real) are padding."""
    batch, width = logits.shape
    vocab_size = width if vocab_size is None else vocab_size
    greedy = jnp.argmax(logits, axis=-1)
    temperature = jnp.maximum(sampling["temperature"], 1e-6)
    filtered = filter_logits(logits / temperature, sampling["top_k"], sampling["top_p"])
    # `jax.random.categorical` (argmax of logits + Gumbel noise), with noise drawn for the
    # real vocabulary only, so that padding does not change which token a seed draws.
    noise = jax.random.gumbel(rng, (batch, vocab_size), filtered.dtype)
    noise = jnp.pad(noise, ((0, 0), (0, width - vocab_size)))
    drawn = jnp.argmax(filtered + noise, axis=-1)
    return jnp.where(sampling["temperature"] > 0, drawn, greedy).astype(jnp.int32)


def prompt_positions(prompt_mask: jax.Array) -> jax.Array:
    """Position ids [batch, length] of left-padded prompts: the first real token is 0."""
    return jnp.maximum(jnp.cumsum(prompt_mask.astype(jnp.int32), axis=-1) - 1, 0)


def empty_cache(model: nn.Module, batch: int, length: int):
    """A zeroed KV cache of `length` slots for `batch` rows (no parameters are made)."""
    shapes = jax.eval_shape(lambda: model.init(
        jax.random.key(0), jnp.zeros((batch, length), jnp.int32), decode=True))["cache"]
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def stop_hits(window: jax.Array, stop_sequences: jax.Array) -> jax.Array:
    """[batch] whether the last tokens `window` [batch, W] end with any of `stop_sequences`
    [S, W] (right-aligned, -1 to their left; all -1 = an unused slot)."""
    matches = (window[:, None, :] == stop_sequences[None]) | (stop_sequences[None] < 0)
    used = jnp.any(stop_sequences >= 0, axis=-1)
    return jnp.any(jnp.all(matches, axis=-1) & used[None], axis=-1)


def generate_tokens(model: nn.Module, params, prompt_ids: jax.Array, prompt_mask: jax.Array,
                    max_new_tokens: int, sampling: dict[str, jax.Array],
                    stop_sequences: jax.Array, rng: jax.Array,
                    use_cache: bool = True) -> tuple[jax.Array, jax.Array]:
    """Continue left-padded prompts [batch, P] by up to `max_new_tokens` tokens.

    Returns (tokens [batch, max_new_tokens], lengths [batch]): a row ends once its new
    tokens end with one of `stop_sequences` (see `stop_hits`; the stop tokens are kept)
    and is zero beyond its length; the loop ends when every row has stopped. `params` is
    the tree under 'params'. Jit this with `max_new_tokens` and `use_cache` static.
    """
    batch, prompt_len = prompt_ids.shape
    width = stop_sequences.shape[1]
    positions = prompt_positions(prompt_mask)
    next_position = positions[:, -1] + 1  # [batch]
    if use_cache:
        logits, variables = model.apply(
            {"params": params, "cache": empty_cache(model, batch, prompt_len + max_new_tokens)},
            prompt_ids, positions, prompt_mask, decode=True, mutable=["cache"])
        memory = variables["cache"]
    else:
        logits = model.apply({"params": params}, prompt_ids, positions, prompt_mask)
        pad = jnp.zeros((batch, max_new_tokens), prompt_ids.dtype)
        memory = jnp.concatenate([prompt_ids, pad], axis=1)  # the whole token buffer
    full_mask = jnp.concatenate([prompt_mask, jnp.ones((batch, max_new_tokens),
                                                       prompt_mask.dtype)], axis=1)
    full_positions = prompt_positions(full_mask)

    def next_logits(memory, token, step):
        """Logits after appending `token` [batch] as new-token number `step`."""
        if use_cache:
            out, variables = model.apply(
                {"params": params, "cache": memory}, token[:, None],
                (next_position + step)[:, None], decode=True, mutable=["cache"])
            return out[:, 0], variables["cache"]
        memory = jax.lax.dynamic_update_slice(memory, token[:, None], (0, prompt_len + step))
        out = model.apply({"params": params}, memory, full_positions, full_mask)
        return jax.lax.dynamic_index_in_dim(out, prompt_len + step, 1, keepdims=False), memory

    def keep_going(carry):
        step, _, _, _, done, _ = carry
        return (step < max_new_tokens) & ~jnp.all(done)

    def one_token(carry):
        step, memory, logits, tokens, done, lengths = carry
        token = choose_tokens(logits, jax.random.fold_in(rng, step), sampling,
                              model.config.vocab_size)
        token = jnp.where(done, 0, token)
        # `tokens` sits after `width` slots of -2 (never a token), so the window of the
        # last `width` new tokens is one fixed-size slice even in the first steps.
        tokens = jax.lax.dynamic_update_slice(tokens, token[:, None], (0, width + step))
        window = jax.lax.dynamic_slice_in_dim(tokens, step + 1, width, axis=1)
        hit = stop_hits(window, stop_sequences) & ~done
        lengths = jnp.where(hit, step + 1, lengths)
        logits, memory = next_logits(memory, token, step)
        return step + 1, memory, logits, tokens, done | hit, lengths

    tokens = jnp.concatenate([jnp.full((batch, width), -2, jnp.int32),
                              jnp.zeros((batch, max_new_tokens), jnp.int32)], axis=1)
    done = jnp.zeros((batch,), jnp.bool_)
    lengths = jnp.full((batch,), max_new_tokens, jnp.int32)
    carry = (jnp.int32(0), memory, logits[:, -1], tokens, done, lengths)
    _, _, _, tokens, _, lengths = jax.lax.while_loop(keep_going, one_token, carry)
    live = jnp.arange(max_new_tokens)[None, :] < lengths[:, None]
    return jnp.where(live, tokens[:, width:], 0), lengths
