"""GPT pretraining examples: documents joined by end-of-text and packed into rows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lmscale.data.tokenizer import Tokenizer
from lmscale.errors import InputError


def token_stream(documents: Sequence[str], tokenizer: Tokenizer) -> np.ndarray:
    """All documents' tokens, each document followed by end-of-text (GPT-2's separator)."""
    if tokenizer.eot_id is None:
        raise InputError("the tokenizer has no end-of-text token; GPT packing needs one")
    pieces = []
    for doc in documents:
        pieces.append(np.asarray(tokenizer.encode(doc), np.int32))
        pieces.append(np.asarray([tokenizer.eot_id], np.int32))
    return np.concatenate(pieces) if pieces else np.zeros((0,), np.int32)


def pack_token_stream(stream: np.ndarray, seq_len: int, pad_id: int = 0) -> dict[str, np.ndarray]:
    """Rows of `seq_len` inputs with next-token targets, every token used once as a target.

    Row i reads stream[i*seq_len : i*seq_len + seq_len + 1], so consecutive rows overlap by
    the one token that is the last target of a row and the first input of the next. The
    final partial row is padded and its padding masked out of the loss: no token is lost.
    """
    if len(stream) < 2:
        raise InputError("the corpus has fewer than 2 tokens; nothing to train on")
    num_rows = -(-(len(stream) - 1) // seq_len)
    padded = np.full(num_rows * seq_len + 1, pad_id, np.int32)
    padded[: len(stream)] = stream
    starts = np.arange(num_rows)[:, None] * seq_len + np.arange(seq_len)[None, :]
    loss_mask = (starts + 1 < len(stream)).astype(np.float32)
    return {"input_ids": padded[starts], "targets": padded[starts + 1], "loss_mask": loss_mask}
