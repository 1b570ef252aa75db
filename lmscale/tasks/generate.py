"""Text in, text out: batched GPT generation with the KV cache, on any device mesh.

`Generator` tokenises prompts, left-pads them to a shared length (rounded up to a
multiple of 8 so that similar prompt lengths share one compiled program), places the
parameters by their logical axis names (the vocabulary padded for the mesh's tensor axis,
`lmscale.train.step.model_for_mesh`) and runs `lmscale.models.generation.generate_tokens`
under the mesh.
Rows end at end-of-text or at a stop string: the loop ends a row as soon as its new tokens
end with the stop string's own tokenisation, and every stop string also cuts the decoded
text, since in context a stop string may be spelled by other tokens or hide inside a
longer one.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from lmscale.data.tokenizer import Tokenizer
from lmscale.errors import InputError
from lmscale.models import GPT
from lmscale.models.generation import Sampling, generate_tokens
from lmscale.models.vocab import fit_vocab
from lmscale.parallel.mesh import (
    batch_sharding, data_parallel_size, logical_to_sharding, make_mesh, mesh_context,
)
from lmscale.train.step import model_for_mesh

PROMPT_LENGTH_MULTIPLE = 8
GREEDY = Sampling()
# Stop sequences are padded (with -1) to at least this many, this many tokens long, so
# that new stop strings seldom recompile.
STOP_SLOTS = 8


@dataclass(frozen=True)
class Generated:
    text: str  # the continuation, cut before the first stop string
    token_ids: list[int]  # generated ids, including the stop tokens that ended the row
    stopped: str  # "end_of_text", "stop" (a stop string) or "length"


def padded_prompt_length(longest: int, max_new_tokens: int, context: int) -> int:
    """The shared prompt length: `longest` rounded up, unless that overflows the context."""
    if longest + max_new_tokens > context:
        raise InputError(
            f"a prompt of {longest} tokens plus {max_new_tokens} new tokens exceeds the "
            f"model's context of {context} tokens; shorten the prompt or lower "
            "--max-new-tokens")
    rounded = -(-longest // PROMPT_LENGTH_MULTIPLE) * PROMPT_LENGTH_MULTIPLE
    return rounded if rounded + max_new_tokens <= context else longest


def left_pad(rows: Sequence[Sequence[int]], length: int,
             batch: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask) [batch, length]; rows beyond len(rows) repeat the first (mesh filler)."""
    ids = np.zeros((batch, length), np.int32)
    mask = np.zeros((batch, length), np.int32)
    for i in range(batch):
        row = rows[i] if i < len(rows) else rows[0]
        ids[i, length - len(row):] = row
        mask[i, length - len(row):] = 1
    return ids, mask


def stop_sequence_array(sequences: Sequence[Sequence[int]]) -> np.ndarray:
    """[S, W] int32, each sequence right-aligned after -1s; S and W are at least
    STOP_SLOTS (unused rows are all -1)."""
    sequences = [list(s) for s in dict.fromkeys(map(tuple, sequences)) if s]
    slots = max(STOP_SLOTS, len(sequences))
    width = max([STOP_SLOTS] + [len(s) for s in sequences])
    array = np.full((slots, width), -1, np.int32)
    for row, sequence in enumerate(sequences):
        array[row, width - len(sequence):] = sequence
    return array


def place_params(model: GPT, params, mesh: Mesh):
    """`params` (the tree under 'params') laid out on `mesh` by their logical axis names,
    the vocabulary rows fitted to `model`'s padded size (zero rows added or padding cut)."""
    with mesh_context(mesh):
        boxed = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                                  jnp.zeros((1, 1), jnp.int32)))
    shardings = logical_to_sharding(nn.get_partition_spec(boxed), mesh)["params"]
    return jax.device_put(fit_vocab(nn.unbox(params), model.config), shardings)


class Generator:
    """A GPT, its parameters (placed on `mesh`) and tokenizer, ready to continue prompts."""

    def __init__(self, model: GPT, params, tokenizer: Tokenizer, mesh: Mesh | None = None):
        self.tokenizer = tokenizer
        self.mesh = mesh if mesh is not None else make_mesh({"data": -1})
        self.model = GPT(model_for_mesh(model.config, self.mesh))
        self.params = place_params(self.model, params, self.mesh)
        self._run = jax.jit(functools.partial(generate_tokens, self.model),
                            static_argnames=("max_new_tokens", "use_cache"))

    def generate_ids(self, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                     sampling: Sampling = GREEDY,
                     stop_sequences: Sequence[Sequence[int]] = (),
                     use_cache: bool = True) -> list[list[int]]:
        """Continue token-id prompts. A row ends after end-of-text or once it ends with one
        of `stop_sequences` (token-id lists); the stop tokens are kept."""
        if not prompts:
            return []
        if max_new_tokens <= 0:
            raise InputError(f"max_new_tokens must be positive, got {max_new_tokens}")
        if any(len(p) == 0 for p in prompts):
            raise InputError("a prompt is empty; give at least one token")
        length = padded_prompt_length(max(len(p) for p in prompts), max_new_tokens,
                                      self.model.config.max_len)
        ways = data_parallel_size(self.mesh)
        batch = -(-len(prompts) // ways) * ways
        ids, mask = left_pad(prompts, length, batch)
        eot = self.tokenizer.eot_id
        stops = stop_sequence_array([*stop_sequences, *([[eot]] if eot is not None else [])])
        with mesh_context(self.mesh):
            rows = batch_sharding(self.mesh, 2)
            tokens, lengths = self._run(
                self.params, jax.device_put(ids, rows), jax.device_put(mask, rows),
                max_new_tokens=max_new_tokens, sampling=sampling.arrays(),
                stop_sequences=jnp.asarray(stops),
                rng=jax.random.key(sampling.seed), use_cache=use_cache)
        tokens, lengths = np.asarray(tokens), np.asarray(lengths)
        return [tokens[i, : lengths[i]].tolist() for i in range(len(prompts))]

    def generate(self, prompts: Sequence[str], max_new_tokens: int,
                 sampling: Sampling = GREEDY, stop: Sequence[str] = (),
                 use_cache: bool = True) -> list[Generated]:
        """Continue text prompts. An empty prompt starts from end-of-text (GPT-2's
        unconditional samples)."""
        eot = self.tokenizer.eot_id
        encoded = [self.tokenizer.encode(p) if p else ([eot] if eot is not None else [])
                   for p in prompts]
        outputs = self.generate_ids(encoded, max_new_tokens, sampling,
                                    [self.tokenizer.encode(s) for s in stop if s], use_cache)
        return [self._finish(ids, stop) for ids in outputs]

    def _finish(self, ids: list[int], stop: Sequence[str]) -> Generated:
        eot = self.tokenizer.eot_id
        ended = bool(ids) and ids[-1] == eot
        text = self.tokenizer.decode(ids[:-1] if ended else ids)
        cuts = [text.find(s) for s in stop if s and s in text]
        if cuts:
            return Generated(text[: min(cuts)], ids, "stop")
        return Generated(text, ids, "end_of_text" if ended else "length")
