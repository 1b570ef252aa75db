"""Log-likelihood of token targets under a GPT, batched on a mesh: the one scoring path
behind few-shot multiple choice and perplexity.

A row is (input ids, target ids, weights): the summed log-probability of the targets with
weight 1 is returned per row, with whether each of them was also the argmax (greedy match).
Rows are right-padded to a shared length (rounded up to a multiple of 32, so few programs
are compiled) and batches filled to a fixed size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from lmscale.errors import InputError
from lmscale.models import GPT
from lmscale.parallel.mesh import batch_sharding, data_parallel_size, mesh_context
from lmscale.train.step import model_for_mesh
from lmscale.tasks.generate import place_params

LENGTH_MULTIPLE = 32


@dataclass(frozen=True)
class Row:
    input_ids: Sequence[int]
    targets: Sequence[int]
    weights: Sequence[float]  # 1 where the target counts


def _row_scores(model: GPT, params, input_ids, targets, weights):
    # [b, t, padded vocab] float32; the padding is masked, so it takes no probability and
    # is never the argmax.
    logits = model.apply({"params": params}, input_ids)
    logprobs = jax.nn.log_softmax(logits, axis=-1)
    target_logprobs = jnp.take_along_axis(logprobs, targets[..., None], axis=-1)[..., 0]
    is_argmax = jnp.argmax(logits, axis=-1) == targets
    summed = jnp.sum(target_logprobs * weights, axis=-1)
    all_greedy = jnp.all(is_argmax | (weights == 0), axis=-1)
    return summed, all_greedy


class Scorer:
    def __init__(self, model: GPT, params, mesh: Mesh, batch_size: int = 16):
        self.model = model = GPT(model_for_mesh(model.config, mesh))
        self.mesh = mesh
        ways = data_parallel_size(mesh)
        self.batch_size = -(-batch_size // ways) * ways
        self.params = place_params(model, params, mesh)
        self._run = jax.jit(lambda p, i, t, w: _row_scores(model, p, i, t, w))

    def score(self, rows: Sequence[Row]) -> tuple[np.ndarray, np.ndarray]:
        """(summed log-probability [n], every counted target was the argmax [n])."""
        max_len = self.model.config.max_len
        longest = max(len(r.input_ids) for r in rows)
        if longest > max_len:
            raise InputError(f"a row of {longest} tokens exceeds the context of {max_len}")
        length = min(max_len, -(-longest // LENGTH_MULTIPLE) * LENGTH_MULTIPLE)
        sums, greedy = [], []
        with mesh_context(self.mesh):
            sharding = batch_sharding(self.mesh, 2)
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start: start + self.batch_size]
                arrays = [np.zeros((self.batch_size, length), dtype)
                          for dtype in (np.int32, np.int32, np.float32)]
                for i, row in enumerate(chunk):
                    for array, values in zip(arrays, (row.input_ids, row.targets, row.weights)):
                        array[i, : len(values)] = values
                s, g = self._run(self.params, *(jax.device_put(a, sharding) for a in arrays))
                sums.append(np.asarray(s)[: len(chunk)])
                greedy.append(np.asarray(g)[: len(chunk)])
        return np.concatenate(sums), np.concatenate(greedy)


def continuation_row(context: Sequence[int], continuation: Sequence[int],
                     max_len: int) -> Row:
    """Score `continuation` after `context`; the context loses tokens from the left when
    the two exceed `max_len` + 1 (the first token is never a target)."""
    if not continuation or len(continuation) > max_len:
        raise InputError(f"a continuation of {len(continuation)} tokens cannot be scored in a "
                         f"context of {max_len}")
    tokens = list(context) + list(continuation)
    tokens = tokens[max(0, len(tokens) - (max_len + 1)):]
    weights = [0.0] * (len(tokens) - 1 - len(continuation)) + [1.0] * len(continuation)
    return Row(tokens[:-1], tokens[1:], weights)
