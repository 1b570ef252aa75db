"""A padded vocabulary changes only the width of the logits: the padding's logits are
masked (finite, never chosen), so logits, loss, gradients, scoring and generation over
the real vocabulary equal an unpadded model's, even with large values in the padding rows
(which win everywhere unless masked)."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lmscale.errors import InputError
from lmscale.models import GPT, BertForPretraining, ModelConfig, preset
from lmscale.models.generation import Sampling, choose_tokens, filter_logits
from lmscale.models.vocab import PADDED_LOGIT, fit_vocab, resize_vocab, unpad_vocab
from lmscale.parallel.mesh import make_mesh
from lmscale.tasks.generate import Generator
from lmscale.tasks.scoring import Row, Scorer, continuation_row
from lmscale.train.bench import synthetic_batch

VOCAB = 95  # padded to 128 (tensor 1) or 256 (tensor 2)
SHAPE = dict(vocab_size=VOCAB, max_len=64, d_model=64, num_heads=2, d_ff=128, num_layers=2,
             dropout=0.0, initializer_range=0.3)
PADDED = ModelConfig.from_dict(preset("gpt2-tiny", **SHAPE))
PLAIN = dataclasses.replace(PADDED, vocab_multiple=1)


def with_loud_padding(params: dict, path: tuple[str, ...], scale: float, seed: int = 0):
    """`params` with the padding rows of the array at `path` set to large random values."""
    rng = np.random.default_rng(seed)
    params = jax.tree.map(np.asarray, params)
    array = params
    for key in path:
        array = array[key]
    array = array.copy()
    array[VOCAB:] = scale * rng.normal(size=array[VOCAB:].shape)
    node = params
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = array
    return params


@pytest.fixture(scope="module")
def gpt_params():
    """(padded params with loud padding rows, the same real rows unpadded)."""
    params = nn.unbox(GPT(PADDED).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))["params"]
    assert params["wte"]["embedding"].shape == (128, 64)
    loud = with_loud_padding(params, ("wte", "embedding"), 100.0)
    return loud, unpad_vocab(loud, PADDED)


def test_gpt_logits_loss_and_gradients_equal_the_unpadded_model(gpt_params):
    loud, plain = gpt_params
    ids = jnp.asarray(np.random.default_rng(1).integers(0, VOCAB, (2, 16)), jnp.int32)
    logits = GPT(PADDED).apply({"params": loud}, ids)
    reference = GPT(PLAIN).apply({"params": plain}, ids)
    assert logits.shape == (2, 16, 128) and reference.shape == (2, 16, VOCAB)
    np.testing.assert_allclose(logits[..., :VOCAB], reference, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(logits[..., VOCAB:]) == PADDED_LOGIT)
    logprobs = jax.nn.log_softmax(logits, axis=-1)
    assert np.all(np.isfinite(logprobs))
    np.testing.assert_allclose(logprobs[..., :VOCAB], jax.nn.log_softmax(reference, axis=-1),
                               rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(jnp.argmax(logits, -1)) < VOCAB)
    # The padding rows are loud: read as real tokens, they would take most argmaxes.
    as_tokens = GPT(dataclasses.replace(PLAIN, vocab_size=128)).apply({"params": loud}, ids)
    assert np.mean(np.asarray(jnp.argmax(as_tokens, -1)) >= VOCAB) > 0.5

    targets = jnp.roll(ids, -1, axis=1)

    def loss(params, cfg):
        out = GPT(cfg).apply({"params": params}, ids)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, targets))

    value, grads = jax.value_and_grad(loss)(loud, PADDED)
    ref_value, ref_grads = jax.value_and_grad(loss)(plain, PLAIN)
    assert np.isfinite(value) and value == pytest.approx(float(ref_value), rel=1e-6)
    wte_grad = np.asarray(grads["wte"]["embedding"])
    assert np.all(wte_grad[VOCAB:] == 0)  # the padding rows never learn
    # Equal to float32 rounding (the rows sum lookup and output-layer contributions).
    np.testing.assert_allclose(wte_grad[:VOCAB], ref_grads["wte"]["embedding"], rtol=1e-4,
                               atol=1e-6)


def test_bert_mlm_logits_equal_the_unpadded_model():
    cfg = ModelConfig.from_dict(preset("bert-tiny", vocab_size=VOCAB, max_len=16, d_model=32,
                                       num_heads=2, d_ff=64, num_layers=2, dropout=0.0))
    batch = synthetic_batch(cfg, 2, 16, 3)
    inputs = [jnp.asarray(batch[k]) for k in ("input_ids", "token_type_ids", "attention_mask",
                                              "masked_lm_positions")]
    params = nn.unbox(BertForPretraining(cfg).init(jax.random.key(0), *inputs))["params"]
    assert params["mlm_bias"].shape == (128,)
    assert params["bert"]["word_embeddings"]["embedding"].shape == (128, 32)
    loud = with_loud_padding(params, ("bert", "word_embeddings", "embedding"), 100.0)
    loud = with_loud_padding(loud, ("mlm_bias",), 1e4)
    mlm, nsp = BertForPretraining(cfg).apply({"params": loud}, *inputs)
    plain_cfg = dataclasses.replace(cfg, vocab_multiple=1)
    ref_mlm, ref_nsp = BertForPretraining(plain_cfg).apply(
        {"params": unpad_vocab(loud, cfg)}, *inputs)
    assert mlm.shape == (2, 3, 128) and ref_mlm.shape == (2, 3, VOCAB)
    np.testing.assert_allclose(mlm[..., :VOCAB], ref_mlm, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(mlm[..., VOCAB:]) == PADDED_LOGIT)
    np.testing.assert_allclose(nsp, ref_nsp, rtol=1e-6)
    labels = jnp.asarray(batch["masked_lm_ids"])
    loss = optax.softmax_cross_entropy_with_integer_labels(mlm, labels)
    np.testing.assert_allclose(
        loss, optax.softmax_cross_entropy_with_integer_labels(ref_mlm, labels), rtol=1e-5)


def test_resize_vocab_pads_with_zeros_and_cuts_only_padding():
    tree = {"params": {"wte": {"embedding": np.ones((100, 2), np.float32)},
                       "wpe": {"embedding": np.ones((7, 2), np.float32)}}}
    padded = resize_vocab(tree, 128, 95)
    assert padded["params"]["wte"]["embedding"].shape == (128, 2)
    assert np.all(padded["params"]["wte"]["embedding"][100:] == 0)
    assert padded["params"]["wpe"]["embedding"].shape == (7, 2)  # positions are not vocab
    assert fit_vocab(padded, PLAIN)["params"]["wte"]["embedding"].shape == (95, 2)
    with pytest.raises(InputError, match="cannot fit a vocabulary of 95 tokens into 90 rows"):
        resize_vocab(tree, 90, 95)
    with pytest.raises(InputError, match="wte/embedding has 100 rows, fewer than the 101"):
        resize_vocab(tree, 128, 101)


@pytest.mark.parametrize("sampling", [Sampling(), Sampling(1.0), Sampling(0.7, top_k=5),
                                      Sampling(1.3, top_p=0.8), Sampling(2.0, 200, 0.95)])
def test_a_seed_draws_the_same_token_whatever_the_padding(sampling):
    logits = jnp.asarray(np.random.default_rng(2).normal(size=(64, VOCAB)) * 3, jnp.float32)
    padded = jnp.concatenate([logits, jnp.full((64, 161), PADDED_LOGIT)], axis=1)
    rng, settings = jax.random.key(7), sampling.arrays()
    drawn = np.asarray(choose_tokens(logits, rng, settings))
    np.testing.assert_array_equal(np.asarray(choose_tokens(padded, rng, settings, VOCAB)),
                                  drawn)
    if sampling.temperature > 0:  # unpadded, the draw is jax.random.categorical's
        filtered = filter_logits(logits / sampling.temperature, settings["top_k"],
                                 settings["top_p"])
        np.testing.assert_array_equal(jax.random.categorical(rng, filtered), drawn)
        assert len(set(drawn.tolist())) > 1
    assert np.all(drawn < VOCAB)


class IdTokenizer:
    vocab_size = VOCAB
    eot_id = VOCAB - 1

    def encode(self, text):
        return [int(t) for t in text.split()]

    def decode(self, ids):
        return " ".join(map(str, ids))


PROMPTS = [[5, 17, 33], [8, 2, 71, 40, 9], [90], [23, 23, 7, 81]]


@pytest.mark.slow  # ~45 s of generation at three tensor sizes
def test_generation_never_picks_padding_and_matches_across_tensor_sizes(gpt_params):
    loud, plain = gpt_params
    one_device = Generator(GPT(PLAIN), plain, IdTokenizer(),
                           make_mesh({"data": 1}, jax.devices()[:1]))
    # 95 tokens over tensor=2: padded to 256 rows (the loud rows kept, zeros after them).
    sharded = Generator(GPT(PADDED), loud, IdTokenizer(), make_mesh({"data": 4, "tensor": 2}))
    assert sharded.model.config.padded_vocab_size == 256
    assert sharded.params["wte"]["embedding"].shape == (256, 64)
    for sampling in (Sampling(), Sampling(1.0, seed=3), Sampling(1.5, top_k=10, seed=4),
                     Sampling(1.5, top_p=0.9, seed=5)):
        tokens = sharded.generate_ids(PROMPTS, 8, sampling)
        assert all(0 <= t < VOCAB for row in tokens for t in row)
        assert tokens == one_device.generate_ids(PROMPTS, 8, sampling), sampling
    # Greedy decoding is the unpadded model's argmax.
    ids = list(PROMPTS[0])
    for _ in range(len(one_device.generate_ids(PROMPTS[:1], 8)[0])):
        logits = GPT(PLAIN).apply({"params": plain}, jnp.asarray([ids]))
        ids.append(int(jnp.argmax(logits[0, -1])))
    assert sharded.generate_ids(PROMPTS[:1], 8)[0] == ids[len(PROMPTS[0]):]


def test_scores_equal_the_unpadded_models_log_likelihoods(gpt_params):
    loud, plain = gpt_params
    rows = [continuation_row([5, 17, 33, 2], [40, 9], 64), continuation_row([90], [3], 64),
            Row([1, 2, 3], [2, 3, 4], [1.0, 1.0, 1.0])]
    sums, greedy = Scorer(GPT(PADDED), loud, make_mesh({"data": 4, "tensor": 2}),
                          batch_size=4).score(rows)
    for row, total, all_greedy in zip(rows, sums, greedy):
        logits = GPT(PLAIN).apply({"params": plain}, jnp.asarray([row.input_ids]))[0]
        logprobs = np.asarray(jax.nn.log_softmax(logits, axis=-1))
        picked = logprobs[np.arange(len(row.targets)), row.targets]
        assert total == pytest.approx(float(np.sum(picked * np.asarray(row.weights))),
                                      rel=1e-5)
        argmax = np.argmax(np.asarray(logits), axis=-1)
        counted = np.asarray(row.weights) > 0
        assert bool(all_greedy) == bool(np.all(argmax[counted] == np.asarray(row.targets)
                                               [counted]))
