"""`lmscale eval perplexity`: sliding-window perplexity of a text file (GPT-2 section 3.1
reports WikiText this way).

The text is one token stream with end-of-text in front, so its first token is predicted
too. Windows of `window` tokens start every `stride` tokens; each window scores only the
targets no earlier window scored, so every token is predicted exactly once, with at least
`window - stride` tokens of context (except in the first window). stride == window is
plain chunked evaluation.

Reported: token-level perplexity exp(NLL / tokens), word-level perplexity
exp(NLL / words) with words = whitespace-separated strings of the file, and bits per byte
NLL / ln 2 / UTF-8 bytes. The last two do not depend on the tokenizer, so models with
different vocabularies compare.
"""

from __future__ import annotations

import math

import numpy as np

from lmscale.data.tokenizer import Tokenizer
from lmscale.errors import InputError
from lmscale.tasks.scoring import Row, Scorer


def sliding_windows(stream: np.ndarray, window: int, stride: int) -> list[Row]:
    """Rows predicting stream[1:] exactly once each, in windows of `window` inputs."""
    if not 0 < stride <= window:
        raise InputError(f"stride must be in 1..window ({window}), got {stride}")
    if len(stream) < 2:
        raise InputError("the text has fewer than 2 tokens; nothing to score")
    rows, scored = [], 1  # stream[0] (end-of-text) is context only
    begin = 0
    while scored < len(stream):
        end = min(begin + window, len(stream) - 1)
        inputs, targets = stream[begin:end], stream[begin + 1: end + 1]
        target_index = np.arange(begin + 1, end + 1)
        rows.append(Row(inputs.tolist(), targets.tolist(),
                        (target_index >= scored).astype(np.float32).tolist()))
        scored = end + 1
        begin += stride
    return rows


def perplexity(scorer: Scorer, tokenizer: Tokenizer, text: str, window: int,
               stride: int) -> dict:
    if not text.strip():
        raise InputError("the text is empty")
    if window > scorer.model.config.max_len:
        raise InputError(f"window {window} exceeds the model's context of "
                         f"{scorer.model.config.max_len}")
    start = [] if tokenizer.eot_id is None else [tokenizer.eot_id]
    stream = np.asarray(start + tokenizer.encode(text), np.int32)
    rows = sliding_windows(stream, window, stride)
    logprobs, _ = scorer.score(rows)
    nll = -float(np.sum(logprobs))
    tokens = int(sum(sum(r.weights) for r in rows))
    words = len(text.split())
    num_bytes = len(text.encode("utf-8"))
    return {"tokens": tokens, "words": words, "bytes": num_bytes, "windows": len(rows),
            "window": window, "stride": stride, "nll_per_token": nll / tokens,
            "token_perplexity": math.exp(nll / tokens),
            "word_perplexity": math.exp(nll / words),
            "bits_per_byte": nll / math.log(2) / num_bytes}
