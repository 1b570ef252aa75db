"""GPT pretraining examples: documents joined by end-of-text and packed into rows."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from lmscale.data.tokenizer import Tokenizer
from lmscale.errors import InputError


def document_tokens(documents: Iterable[str], tokenizer: Tokenizer) -> Iterator[np.ndarray]:
    """Each document's tokens followed by end-of-text (GPT-2's separator), one at a time."""
    if tokenizer.eot_id is None:
        raise InputError("the tokenizer has no end-of-text token; GPT packing needs one")
    for doc in documents:
        yield np.asarray([*tokenizer.encode(doc), tokenizer.eot_id], np.int32)


def token_stream(documents: Sequence[str], tokenizer: Tokenizer) -> np.ndarray:
    """All documents' tokens, each document followed by end-of-text."""
    pieces = list(document_tokens(documents, tokenizer))
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


def pack_token_pieces(pieces: Iterable[np.ndarray], seq_len: int,
                      pad_id: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """`pack_token_stream` of the pieces' concatenation, row by row, holding only one
    row's worth of tokens beyond the current piece: rows are equal to the whole-array
    version's, in order, so a shard is packed without its stream in memory. Fewer than 2
    tokens make no row."""
    buffer = np.zeros((0,), np.int32)
    for piece in pieces:
        buffer = np.concatenate([buffer, np.asarray(piece, np.int32)])
        # A row needs seq_len + 1 tokens; its last token starts the next row.
        while len(buffer) > seq_len:
            yield {"input_ids": buffer[:seq_len], "targets": buffer[1:seq_len + 1],
                   "loss_mask": np.ones(seq_len, np.float32)}
            buffer = buffer[seq_len:]
    if len(buffer) > 1:  # the final partial row, its padding masked out of the loss
        padded = np.full(seq_len + 1, pad_id, np.int32)
        padded[: len(buffer)] = buffer
        loss_mask = (np.arange(seq_len) + 1 < len(buffer)).astype(np.float32)
        yield {"input_ids": padded[:seq_len], "targets": padded[1:], "loss_mask": loss_mask}


def example_features(seq_len: int) -> dict[str, tuple[tuple[int, ...], type]]:
    """The shape and dtype of each array of one packed row."""
    return {"input_ids": ((seq_len,), np.int32), "targets": ((seq_len,), np.int32),
            "loss_mask": ((seq_len,), np.float32)}
