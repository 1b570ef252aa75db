"""KV-cache decoding equals repeated full forward passes; sampling filters; stops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmscale.errors import InputError
from lmscale.models import GPT, ModelConfig, preset
from lmscale.models.generation import Sampling, filter_logits
from lmscale.parallel.mesh import make_mesh
from lmscale.tasks.generate import Generator

# A large init scale makes a random model's greedy choices vary from token to token, so
# a cache bug changes the sequence instead of hiding behind one repeated token.
CONFIG = ModelConfig.from_dict(preset("gpt2-tiny", vocab_size=96, max_len=64, num_layers=2,
                                      dropout=0.0, initializer_range=0.3))


class IdTokenizer:
    """Token ids as space-separated numbers; 95 is end-of-text."""

    vocab_size = 96
    eot_id = 95

    def encode(self, text):
        return [int(t) for t in text.split()]

    def decode(self, ids):
        return " ".join(str(i) for i in ids)


PROMPTS = [[5, 17, 33], [8, 2, 71, 40, 9, 12, 60, 1, 3, 44], [90], [23, 23, 7, 81, 5, 6]]
NEW_TOKENS = 12


@pytest.fixture(scope="module")
def model_and_params():
    model = GPT(CONFIG)
    init = jax.jit(lambda: model.init(jax.random.key(3), jnp.zeros((1, 4), jnp.int32)))
    return model, init()["params"]


@pytest.fixture(scope="module")
def generator(model_and_params):
    """One device; shared so that its compiled programs are reused across tests."""
    model, params = model_and_params
    return Generator(model, params, IdTokenizer(), make_mesh({"data": 1}, jax.devices()[:1]))


@pytest.fixture(scope="module")
def expected(model_and_params):
    """The definition of greedy decoding: argmax of a fresh full forward pass over the
    growing sequence. The sequence sits at the start of a fixed buffer (one compilation);
    causal attention keeps the zeros after it from touching the logits read."""
    model, params = model_and_params
    forward = jax.jit(lambda ids: model.apply({"params": params}, ids))
    rows = []
    for prompt in PROMPTS:
        buffer = np.zeros((1, CONFIG.max_len), np.int32)
        ids = list(prompt)
        while len(ids) < len(prompt) + NEW_TOKENS and (ids[-1] != IdTokenizer.eot_id
                                                       or len(ids) == len(prompt)):
            buffer[0, : len(ids)] = ids
            ids.append(int(jnp.argmax(forward(buffer)[0, len(ids) - 1])))
        rows.append(ids[len(prompt):])
    return rows


def test_cached_greedy_equals_full_forward_for_batched_prompts_of_different_lengths(
        generator, expected):
    assert generator.generate_ids(PROMPTS, NEW_TOKENS) == expected
    assert generator.generate_ids(PROMPTS, NEW_TOKENS, use_cache=False) == expected
    assert sum(len(set(row)) > 2 for row in expected) >= 3  # not one token repeated


def test_cached_greedy_on_a_2x2x2_mesh_equals_full_forward(model_and_params, expected):
    assert jax.device_count() == 8, "tests/conftest.py sets 8 fake CPU devices"
    model, params = model_and_params
    sharded = Generator(model, params, IdTokenizer(),
                        make_mesh({"data": 2, "fsdp": 2, "tensor": 2}))
    assert sharded.generate_ids(PROMPTS, NEW_TOKENS) == expected
    assert sharded.generate_ids(PROMPTS[:3], NEW_TOKENS) == expected[:3]  # batch padded to 4


def test_sampling_is_seeded_and_stop_strings_cut_text(generator, expected):
    # Same shapes as the greedy test: new settings and stops reuse its compiled program.
    texts = [" ".join(map(str, p)) for p in PROMPTS]
    hot = Sampling(temperature=1.5, top_k=20, top_p=0.9, seed=4)
    first = generator.generate(texts, NEW_TOKENS, hot)
    assert generator.generate(texts, NEW_TOKENS, hot) == first
    assert generator.generate(texts, NEW_TOKENS, Sampling(1.5, 20, 0.9, seed=5)) != first
    assert [g.token_ids for g in first] != expected
    greedy = generator.generate(texts, NEW_TOKENS)[0]
    assert greedy.token_ids == expected[0]
    stop_token = greedy.token_ids[3]
    cut = generator.generate(texts, NEW_TOKENS, stop=[str(stop_token)])[0]
    assert cut.stopped == "stop"
    assert cut.token_ids == greedy.token_ids[:4]  # one-token stop ends the row in the loop
    assert str(stop_token) not in cut.text.split()


def test_a_multi_token_stop_string_ends_the_row_inside_the_loop(generator, expected):
    texts = [" ".join(map(str, p)) for p in PROMPTS]
    greedy = expected[1]
    pair = greedy[5:7]
    end = next(i + 2 for i in range(len(greedy) - 1) if greedy[i:i + 2] == pair)
    outputs = generator.generate(texts, NEW_TOKENS, stop=[" ".join(map(str, pair))])
    assert outputs[1].token_ids == greedy[:end]
    assert outputs[1].stopped == "stop"
    assert outputs[1].text.split() == [str(t) for t in greedy[:end - 2]]


def test_filter_logits_keeps_top_k_and_nucleus():
    logits = jnp.log(jnp.asarray([[0.5, 0.25, 0.15, 0.1]]))
    kept = lambda k, p: np.isfinite(np.asarray(filter_logits(logits, jnp.int32(k),  # noqa: E731
                                                             jnp.float32(p))))[0].tolist()
    assert kept(0, 1.0) == [True, True, True, True]
    assert kept(2, 1.0) == [True, True, False, False]
    assert kept(0, 0.5) == [True, False, False, False]
    assert kept(0, 0.6) == [True, True, False, False]
    assert kept(0, 0.8) == [True, True, True, False]
    assert kept(1, 0.9) == [True, False, False, False]


def test_prompt_longer_than_the_context_is_an_error(generator):
    with pytest.raises(InputError, match="exceeds the model's context of 64"):
        generator.generate_ids([[1] * 60], 8)
