"""The padded vocabulary: which parameters have a vocabulary axis, resizing that axis, and
masking the logits of the padding.

Tensor parallelism splits the vocabulary axis over `mesh.tensor` devices, so the token
table has `ModelConfig.padded_vocab_size` rows (see `for_tensor_parallel`). No token id
reaches the extra rows, and their logits are set to a large negative finite value inside
the model, so softmax, loss, argmax, scoring and sampling never pick or weight them: the
outputs over the real vocabulary equal those of an unpadded model. Masking, not slicing:
slicing a tensor-sharded axis to a size the devices do not divide forces a gather.

Hugging Face checkpoints and lmscale exports store the vocabulary unpadded; `fit_vocab`
pads (with zero rows) or cuts (padding rows only) a parameter tree to a model's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lmscale.errors import InputError
from lmscale.models.config import ModelConfig

# Parameters whose leading axis is the vocabulary: the token tables (GPT `wte`, BERT
# `word_embeddings`, each tied to the output layer) and BERT's masked-LM output bias.
VOCAB_PARAMS = (("wte", "embedding"), ("word_embeddings", "embedding"), ("mlm_bias",))
# The padding's logit (float32 logits; other dtypes get their own lowest finite value):
# exp(PADDED_LOGIT - max) is exactly 0 and PADDED_LOGIT minus any real log-normaliser
# stays finite, so softmax, log-softmax and cross-entropy see no inf and make no NaN.
PADDED_LOGIT = float(jnp.finfo(jnp.float32).min)


def path_names(path: Sequence[Any]) -> tuple[str, ...]:
    """A `jax.tree_util` key path as plain names, alike for dicts, dataclasses and tuples."""
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                 for k in path)


def is_vocab_param(names: Sequence[str]) -> bool:
    """Whether the parameter at `names` (a path, also inside optimiser state) has the
    vocabulary as its leading axis."""
    names = tuple(names)
    return any(names[-len(suffix):] == suffix for suffix in VOCAB_PARAMS)


def mask_padded_logits(logits: jax.Array, vocab_size: int) -> jax.Array:
    """logits [..., padded vocab] with every column from `vocab_size` on at the lowest
    finite value of their dtype (PADDED_LOGIT for float32)."""
    if logits.shape[-1] == vocab_size:
        return logits
    real = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1) < vocab_size
    return jnp.where(real, logits, jnp.finfo(logits.dtype).min)


def resize_vocab(params: Any, rows: int, vocab_size: int) -> Any:
    """`params` (numpy or jax leaves) with every vocabulary parameter cut or zero-padded
    to `rows` rows. Only padding is cut: a table of fewer than `vocab_size` rows, or a
    request for fewer, is an error."""
    if rows < vocab_size:
        raise InputError(f"cannot fit a vocabulary of {vocab_size} tokens into {rows} rows")

    def resize(path, leaf):
        names = path_names(path)
        if not is_vocab_param(names) or np.shape(leaf)[0] == rows:
            return leaf
        have = np.shape(leaf)[0]
        if have < vocab_size:
            raise InputError(f"{'/'.join(names)} has {have} rows, fewer than the "
                             f"{vocab_size} tokens of the vocabulary")
        if have > rows:
            return leaf[:rows]
        xp = np if isinstance(leaf, np.ndarray) else jnp
        return xp.pad(leaf, [(0, rows - have)] + [(0, 0)] * (np.ndim(leaf) - 1))

    return jax.tree_util.tree_map_with_path(resize, params)


def fit_vocab(params: Any, cfg: ModelConfig) -> Any:
    """`params` with the vocabulary resized to `cfg.padded_vocab_size` rows."""
    return resize_vocab(params, cfg.padded_vocab_size, cfg.vocab_size)


def unpad_vocab(params: Any, cfg: ModelConfig) -> Any:
    """`params` with the vocabulary cut to `cfg.vocab_size` rows: the layout Hugging Face
    checkpoints and lmscale exports store, independent of the tensor-parallel size."""
    return resize_vocab(params, cfg.vocab_size, cfg.vocab_size)
