"""Prompt/completion examples for causal-LM fine-tuning (GPT-1 section 3.2 style: the loss
falls only on the completion; ChatGPT-style instruction data has the same shape).

A file is JSONL, one `{"prompt": str, "completion": str}` object per line. Each example is
prompt tokens + completion tokens + end-of-text; the loss mask is 1 exactly where the
target is a completion token or the final end-of-text (so the model learns to stop).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from lmscale import storage
from lmscale.data.tokenizer import Tokenizer
from lmscale.errors import InputError

FIELDS = ("prompt", "completion")


def read_prompt_completion(path: str, limit: int = 0) -> list[tuple[str, str]]:
    """(prompt, completion) pairs of a JSONL file; `limit` > 0 keeps the first `limit`."""
    pairs = []
    try:
        with storage.open_text(path) as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise InputError(f"{path}:{number} is not valid JSON: {err}") from None
                if not isinstance(record, dict) or set(record) != set(FIELDS) or \
                        not all(isinstance(record[k], str) for k in FIELDS):
                    raise InputError(f"{path}:{number} must be an object with exactly the "
                                     f"string fields {list(FIELDS)}, got {line.strip()[:80]!r}")
                if not record["completion"]:
                    raise InputError(f"{path}:{number} has an empty completion")
                pairs.append((record["prompt"], record["completion"]))
                if limit and len(pairs) == limit:
                    break
    except FileNotFoundError:
        raise InputError(f"prompt/completion file {path!r} does not exist") from None
    if not pairs:
        raise InputError(f"{path!r} holds no examples")
    return pairs


def encode_pair(tokenizer: Tokenizer, prompt: str, completion: str,
                max_tokens: int) -> tuple[list[int], int]:
    """(tokens, number of prompt tokens), at most `max_tokens` long: a too-long example
    loses prompt tokens from the left first (the completion is what is learnt), then
    completion tokens from the right."""
    if tokenizer.eot_id is None:
        raise InputError("the tokenizer has no end-of-text token; completions need one")
    prompt_ids = tokenizer.encode(prompt)
    completion_ids = [*tokenizer.encode(completion), tokenizer.eot_id]
    # Leave room for one prompt token, so that the first completion token is a target.
    completion_ids = completion_ids[: max_tokens - 1]
    prompt_ids = prompt_ids[max(0, len(prompt_ids) + len(completion_ids) - max_tokens):]
    return prompt_ids + completion_ids, len(prompt_ids)


def padded_examples(pairs: Sequence[tuple[str, str]], tokenizer: Tokenizer,
                    seq_len: int, segments: bool = False) -> dict[str, np.ndarray]:
    """One example per row: input_ids, targets, loss_mask [n, seq_len], right-padded.
    `segments` adds the `positions` and `segment_ids` that packed rows carry (one segment
    per row), so padded and packed batches go through the same compiled step."""
    n = len(pairs)
    arrays = {"input_ids": np.zeros((n, seq_len), np.int32),
              "targets": np.zeros((n, seq_len), np.int32),
              "loss_mask": np.zeros((n, seq_len), np.float32)}
    if segments:
        arrays["positions"] = np.broadcast_to(np.arange(seq_len, dtype=np.int32), (n, seq_len))
        arrays["segment_ids"] = np.zeros((n, seq_len), np.int32)
    for row, (prompt, completion) in enumerate(pairs):
        tokens, num_prompt = encode_pair(tokenizer, prompt, completion, seq_len + 1)
        length = len(tokens) - 1
        arrays["input_ids"][row, :length] = tokens[:-1]
        arrays["targets"][row, :length] = tokens[1:]
        # Target j is token j + 1: a completion token when j + 1 >= num_prompt.
        arrays["loss_mask"][row, :length] = np.arange(1, length + 1) >= num_prompt
        if segments:
            arrays["segment_ids"][row, :length] = 1
    return arrays


def packed_examples(pairs: Sequence[tuple[str, str]], tokenizer: Tokenizer,
                    seq_len: int) -> dict[str, np.ndarray]:
    """Whole examples placed one after another into rows of `seq_len` (next-fit, in file
    order; a row is closed when the next example does not fit), with less padding than one
    example per row. `segment_ids` (1, 2, ... within a row, 0 for padding) keep attention
    inside each example and `positions` restart at 0 for each, so a packed example is
    computed exactly as it would be alone in a padded row."""
    rows: list[list[tuple[list[int], int]]] = [[]]
    used = 0
    for prompt, completion in pairs:
        tokens, num_prompt = encode_pair(tokenizer, prompt, completion, seq_len + 1)
        length = len(tokens) - 1
        if used + length > seq_len:
            rows.append([])
            used = 0
        rows[-1].append((tokens, num_prompt))
        used += length
    shape = (len(rows), seq_len)
    arrays = {"input_ids": np.zeros(shape, np.int32), "targets": np.zeros(shape, np.int32),
              "loss_mask": np.zeros(shape, np.float32), "positions": np.zeros(shape, np.int32),
              "segment_ids": np.zeros(shape, np.int32)}
    for row, examples in enumerate(rows):
        start = 0
        for segment, (tokens, num_prompt) in enumerate(examples, 1):
            length = len(tokens) - 1
            span = slice(start, start + length)
            arrays["input_ids"][row, span] = tokens[:-1]
            arrays["targets"][row, span] = tokens[1:]
            arrays["loss_mask"][row, span] = np.arange(1, length + 1) >= num_prompt
            arrays["positions"][row, span] = np.arange(length)
            arrays["segment_ids"][row, span] = segment
            start += length
    return arrays
