"""Few-shot scores and perplexity equal direct computations from the model's logits;
prompts are built exactly as documented; bad task input fails clearly."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmscale.cli import main
from lmscale.errors import InputError
from lmscale.models import GPT, ModelConfig, preset
from lmscale.parallel.mesh import make_mesh
from lmscale.tasks.fewshot import (
    Example, PromptFormat, build_prompt, draw_demos, evaluate_fewshot, parse_example,
)
from lmscale.tasks.perplexity import perplexity
from lmscale.tasks.scoring import Scorer

CONFIG = ModelConfig.from_dict(preset("gpt2-tiny", vocab_size=64, max_len=32, num_layers=2,
                                      dropout=0.0, initializer_range=0.3))
TINY_GPT2 = os.path.join(os.path.dirname(__file__), "..", "convert", "data", "tiny_gpt2")


class NumberTokenizer:
    """"3 4 5" -> [3, 4, 5]; 63 is end-of-text."""

    vocab_size = 64
    eot_id = 63

    def encode(self, text):
        return [int(t) for t in text.split()]


@pytest.fixture(scope="module")
def model_params():
    model = GPT(CONFIG)
    return model, jax.jit(lambda: model.init(jax.random.key(0),
                                             jnp.zeros((1, 4), jnp.int32)))()["params"]


@pytest.fixture(scope="module")
def scorer(model_params):
    return Scorer(*model_params, make_mesh({"data": 1}, jax.devices()[:1]), batch_size=4)


def direct_logprob(model_params, context, continuation):
    model, params = model_params
    tokens = jnp.asarray([context + continuation])
    logprobs = jax.nn.log_softmax(model.apply({"params": params}, tokens)[0], axis=-1)
    return sum(float(logprobs[len(context) - 1 + i, t]) for i, t in enumerate(continuation))


def test_prompt_text_is_exactly_as_documented():
    demos = [Example("Q: 1+1?\nA:", (" 2", " 3"), 0), Example("Q: hi\nA:", answers=(" yo",))]
    example = Example("Q: 2+2?\nA:", (" 4", " 5"), 0)
    assert build_prompt(example, demos, PromptFormat("Answer.", "\n\n")) == (
        "Answer.\n\nQ: 1+1?\nA: 2\n\nQ: hi\nA: yo\n\nQ: 2+2?\nA:")
    assert build_prompt(example, [], PromptFormat()) == "Q: 2+2?\nA:"
    pool = [Example(str(i), answers=("x",)) for i in range(10)]
    assert draw_demos(pool, 3, seed=7, index=2) == draw_demos(pool, 3, seed=7, index=2)
    assert draw_demos(pool, 3, seed=7, index=2) != draw_demos(pool, 3, seed=7, index=3)


def test_multiple_choice_scores_equal_direct_log_likelihoods(model_params, scorer):
    examples = [Example("5 6 7", (" 8", " 9 10 11"), 1), Example("1 2", (" 3 4", " 60"), 0),
                Example("40 41 42 43", (" 44", " 2", " 7 7"), 2)]
    pool = [Example("20 21", (" 22", " 23"), 0), Example("30", (" 31", " 32"), 1)]
    result = evaluate_fewshot(examples, pool, 1, PromptFormat(separator=" "),
                              NumberTokenizer(), scorer, seed=3)
    correct_summed, correct_norm = [], []
    for i, example in enumerate(examples):
        prompt = build_prompt(example, draw_demos(pool, 1, 3, i), PromptFormat(separator=" "))
        context = NumberTokenizer().encode(prompt)
        summed = [direct_logprob(model_params, context, NumberTokenizer().encode(c))
                  for c in example.choices]
        norm = [s / len(c.split()) for s, c in zip(summed, example.choices)]
        correct_summed.append(int(np.argmax(summed)) == example.label)
        correct_norm.append(int(np.argmax(norm)) == example.label)
    assert result["summed_accuracy"] == pytest.approx(np.mean(correct_summed))
    assert result["normalised_accuracy"] == pytest.approx(np.mean(correct_norm))
    stderr = np.std(correct_summed, ddof=1) / np.sqrt(3)
    assert result["summed_stderr"] == pytest.approx(stderr)


def test_choice_log_likelihoods_match_logits(model_params, scorer):
    from lmscale.tasks.fewshot import multiple_choice_scores

    examples = [Example("5 6 7", (" 8", " 9 10 11"), 1)]
    summed, normalised = multiple_choice_scores(scorer, NumberTokenizer(), examples, ["5 6 7"])
    expected = [direct_logprob(model_params, [5, 6, 7], [8]),
                direct_logprob(model_params, [5, 6, 7], [9, 10, 11])]
    np.testing.assert_allclose(summed[0], expected, atol=1e-4)
    np.testing.assert_allclose(normalised[0], [expected[0], expected[1] / 3], atol=1e-4)


def test_perplexity_with_stride_equal_to_window_is_the_plain_average_loss(model_params,
                                                                          scorer):
    model, params = model_params
    tokens = list(np.random.default_rng(0).integers(0, 63, 70))
    text = " ".join(map(str, tokens))
    window = 16
    result = perplexity(scorer, NumberTokenizer(), text, window, window)
    stream = np.asarray([63] + tokens)
    losses = []
    for begin in range(0, len(stream) - 1, window):
        inputs = stream[begin: begin + window]
        targets = stream[begin + 1: begin + window + 1]
        logits = model.apply({"params": params}, jnp.asarray([inputs[: len(targets)]]))[0]
        logprobs = jax.nn.log_softmax(logits, axis=-1)
        losses += [-float(logprobs[j, t]) for j, t in enumerate(targets)]
    assert result["tokens"] == 70 == len(losses)
    assert result["nll_per_token"] == pytest.approx(np.mean(losses), rel=1e-5)
    overlapping = perplexity(scorer, NumberTokenizer(), text, window, 4)
    assert overlapping["tokens"] == 70  # every token scored once, with more context


@pytest.mark.parametrize("record, message", [
    ({"context": "a", "choices": [], "label": 0}, "non-empty list"),
    ({"context": "a", "choices": ["x"], "label": 1}, "must index"),
    ({"context": "a", "choices": ["x"], "label": 0, "extra": 1}, "unknown fields"),
    ({"context": "a", "answers": []}, "non-empty list"),
])
def test_bad_examples_are_errors(record, message):
    with pytest.raises(InputError, match=message):
        parse_example(record, "task.jsonl:1")


def test_k_larger_than_the_pool_is_an_error():
    with pytest.raises(InputError, match="pool holds 2"):
        draw_demos([Example("a", answers=("b",))] * 2, 3, 0, 0)


def test_cli_bad_task_exits_2(tmp_path):
    task = tmp_path / "task.jsonl"
    task.write_text(json.dumps({"context": "a", "choices": [" b", " c"], "label": 0}) + "\n")
    pool = tmp_path / "pool.jsonl"
    pool.write_text(task.read_text())
    base = ["eval", "fewshot", "--checkpoint", TINY_GPT2, "--task", str(task)]
    assert main(base + ["--pool", str(pool), "--shots", "2"]) == 2  # K > pool
    task.write_text(json.dumps({"context": "a", "choices": [], "label": 0}) + "\n")
    assert main(base) == 2
    assert main(["generate", "--checkpoint", TINY_GPT2, "--prompt", "a " * 40,
                 "--max-new-tokens", "4"]) == 2  # longer than the 32-token context
