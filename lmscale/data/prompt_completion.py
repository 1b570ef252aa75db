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

from lmscale.data.tokenizer import Tokenizer
from lmscale.errors import InputError

FIELDS = ("prompt", "completion")


def read_prompt_completion(path: str, limit: int = 0) -> list[tuple[str, str]]:
    """(prompt, completion) pairs of a JSONL file; `limit` > 0 keeps the first `limit`."""
    pairs = []
    try:
        with open(path, encoding="utf-8") as f:
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
                    seq_len: int) -> dict[str, np.ndarray]:
    """One example per row: input_ids, targets, loss_mask [n, seq_len], right-padded."""
    n = len(pairs)
    arrays = {"input_ids": np.zeros((n, seq_len), np.int32),
              "targets": np.zeros((n, seq_len), np.int32),
              "loss_mask": np.zeros((n, seq_len), np.float32)}
    for row, (prompt, completion) in enumerate(pairs):
        tokens, num_prompt = encode_pair(tokenizer, prompt, completion, seq_len + 1)
        length = len(tokens) - 1
        arrays["input_ids"][row, :length] = tokens[:-1]
        arrays["targets"][row, :length] = tokens[1:]
        # Target j is token j + 1: a completion token when j + 1 >= num_prompt.
        arrays["loss_mask"][row, :length] = np.arange(1, length + 1) >= num_prompt
    return arrays


def packed_examples(pairs: Sequence[tuple[str, str]], tokenizer: Tokenizer,
                    seq_len: int) -> dict[str, np.ndarray]:
    """Examples concatenated into one stream and cut into rows of `seq_len` (less padding,
    as in GPT pretraining; an example may attend to the one before it in its row)."""
    stream, completion = [], []
    for prompt, answer in pairs:
        tokens, num_prompt = encode_pair(tokenizer, prompt, answer, seq_len + 1)
        stream += tokens
        completion += [i >= num_prompt for i in range(len(tokens))]
    rows = -(-(len(stream) - 1) // seq_len)
    stream_arr = np.zeros(rows * seq_len + 1, np.int32)
    stream_arr[: len(stream)] = stream
    is_target = np.zeros(rows * seq_len + 1, np.float32)
    is_target[: len(completion)] = completion
    starts = np.arange(rows)[:, None] * seq_len + np.arange(seq_len)[None, :]
    return {"input_ids": stream_arr[starts], "targets": stream_arr[starts + 1],
            "loss_mask": is_target[starts + 1]}
