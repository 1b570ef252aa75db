"""`lmscale eval fewshot`: zero/one/few-shot evaluation with no parameter update (GPT-2
section 3, GPT-3 section 2). The task file format is documented in docs/evaluation.md.

Examples are JSONL: multiple choice `{"context", "choices", "label"}` or generation
`{"context", "answers"}`. The prompt for an example is, exactly,

    instruction + "\\n\\n"                       (when the instruction is not empty)
    + demo.context + demo.target + separator    (for each of the K demonstrations)
    + example.context

where a demonstration's target is `choices[label]` or `answers[0]`. Demonstrations are
drawn without replacement from a separate pool with `random.Random(seed + index)`, so each
example's draw is reproducible on its own. Multiple choice scores each choice by the
summed log-likelihood of its tokens after the prompt, and by that sum divided by its token
count (length-normalised); generation decodes greedily and compares exactly (after
stripping whitespace) with any answer.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lmscale import storage
from lmscale.data.tokenizer import Tokenizer
from lmscale.errors import InputError
from lmscale.tasks.generate import Generator
from lmscale.tasks.scoring import Scorer, continuation_row

MULTIPLE_CHOICE_FIELDS = {"context", "choices", "label"}
GENERATION_FIELDS = {"context", "answers"}
OPTIONAL_FIELDS = {"id"}


@dataclass(frozen=True)
class Example:
    context: str
    choices: tuple[str, ...] = ()  # multiple choice
    label: int = -1
    answers: tuple[str, ...] = ()  # generation

    @property
    def target(self) -> str:
        return self.choices[self.label] if self.choices else self.answers[0]


@dataclass(frozen=True)
class PromptFormat:
    instruction: str = ""
    separator: str = "\n\n"


def parse_example(record: dict, where: str) -> Example:
    if not isinstance(record, dict):
        raise InputError(f"{where}: an example must be a JSON object")
    keys = set(record) - OPTIONAL_FIELDS
    if keys == MULTIPLE_CHOICE_FIELDS:
        choices, label = record["choices"], record["label"]
        if not isinstance(choices, list) or not choices or \
                not all(isinstance(c, str) and c for c in choices):
            raise InputError(f"{where}: 'choices' must be a non-empty list of non-empty strings")
        if not isinstance(label, int) or not 0 <= label < len(choices):
            raise InputError(f"{where}: 'label' must index 'choices' (0..{len(choices) - 1})")
        return Example(str(record["context"]), tuple(choices), label)
    if keys == GENERATION_FIELDS:
        answers = record["answers"]
        if not isinstance(answers, list) or not answers or \
                not all(isinstance(a, str) and a.strip() for a in answers):
            raise InputError(f"{where}: 'answers' must be a non-empty list of non-empty strings")
        return Example(str(record["context"]), answers=tuple(answers))
    unknown = keys - MULTIPLE_CHOICE_FIELDS - GENERATION_FIELDS
    hint = f"unknown fields {sorted(unknown)}; " if unknown else ""
    raise InputError(f"{where}: {hint}an example has fields {sorted(MULTIPLE_CHOICE_FIELDS)} "
                     f"(multiple choice) or {sorted(GENERATION_FIELDS)} (generation), "
                     f"optionally 'id'; got {sorted(record)}")


def read_examples(path: str, limit: int = 0) -> list[Example]:
    examples = []
    try:
        with storage.open_text(path) as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise InputError(f"{path}:{number} is not valid JSON: {err}") from None
                    examples.append(parse_example(record, f"{path}:{number}"))
                    if limit and len(examples) == limit:
                        break
    except FileNotFoundError:
        raise InputError(f"task file {path!r} does not exist") from None
    check_examples(examples, path)
    return examples


def check_examples(examples: Sequence[Example], where: str) -> None:
    if not examples:
        raise InputError(f"{where} holds no examples")
    if len({bool(e.choices) for e in examples}) > 1:
        raise InputError(f"{where} mixes multiple-choice and generation examples")


def build_prompt(example: Example, demos: Sequence[Example], fmt: PromptFormat) -> str:
    """The prompt text exactly as the module docstring states."""
    head = fmt.instruction + "\n\n" if fmt.instruction else ""
    shots = "".join(d.context + d.target + fmt.separator for d in demos)
    return head + shots + example.context


def draw_demos(pool: Sequence[Example], k: int, seed: int, index: int) -> list[Example]:
    if k > len(pool):
        raise InputError(f"K={k} demonstrations requested but the pool holds {len(pool)} "
                         "examples; lower --shots or give a larger --pool")
    return random.Random(seed + index).sample(list(pool), k)


def accuracy(correct: np.ndarray) -> dict[str, float]:
    """Mean and standard error (sample standard deviation / sqrt(n))."""
    n = len(correct)
    mean = float(np.mean(correct))
    stderr = float(np.std(correct, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {"accuracy": mean, "stderr": stderr}


def evaluate_fewshot(examples: Sequence[Example], pool: Sequence[Example], shots: int,
                     fmt: PromptFormat, tokenizer: Tokenizer, scorer: Scorer | None = None,
                     generator: Generator | None = None, seed: int = 0,
                     max_new_tokens: int = 16, stop: Sequence[str] = ("\n",)) -> dict:
    """Scores of `examples` with `shots` demonstrations each; see the module docstring."""
    check_examples(examples, "the task")
    if shots:
        check_examples(pool, "the demonstration pool")
    prompts = [build_prompt(e, draw_demos(pool, shots, seed, i), fmt)
               for i, e in enumerate(examples)]
    result = {"examples": len(examples), "shots": shots, "seed": seed}
    if examples[0].choices:
        summed, normalised = multiple_choice_scores(scorer, tokenizer, examples, prompts)
        labels = np.asarray([e.label for e in examples])
        picked = np.asarray([int(np.argmax(s)) for s in summed])
        picked_norm = np.asarray([int(np.argmax(s)) for s in normalised])
        result |= {f"summed_{k}": v for k, v in accuracy(picked == labels).items()}
        result |= {f"normalised_{k}": v for k, v in accuracy(picked_norm == labels).items()}
        counts = np.bincount(labels, minlength=max(len(e.choices) for e in examples))
        result["majority_baseline"] = float(counts.max() / len(labels))
    else:
        outputs = generator.generate(prompts, max_new_tokens)
        correct = np.asarray([first_answer(o.text, stop) in {a.strip() for a in e.answers}
                              for o, e in zip(outputs, examples)], np.float32)
        result |= {f"exact_match_{k}": v for k, v in accuracy(correct).items()}
    result["first_prompt"] = prompts[0]
    return result


def first_answer(text: str, stop: Sequence[str]) -> str:
    """The generated answer: leading whitespace dropped, cut at the first stop string."""
    text = text.lstrip()
    cuts = [text.find(s) for s in stop if s and s in text]
    return text[: min(cuts)].strip() if cuts else text.strip()


def multiple_choice_scores(scorer: Scorer, tokenizer: Tokenizer, examples: Sequence[Example],
                           prompts: Sequence[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per example: summed and per-token log-likelihood of each choice after its prompt.

    Prompt and choice are tokenised separately and joined, so every choice is scored on
    the same prompt tokens (a choice's leading space stays with the choice)."""
    rows, lengths, owners = [], [], []
    max_len = scorer.model.config.max_len
    for i, (example, prompt) in enumerate(zip(examples, prompts)):
        context = tokenizer.encode(prompt)
        for choice in example.choices:
            ids = tokenizer.encode(choice)
            rows.append(continuation_row(context, ids, max_len))
            lengths.append(len(ids))
            owners.append(i)
    logprobs, _ = scorer.score(rows)
    summed = [[] for _ in examples]
    for owner, value in zip(owners, logprobs):
        summed[owner].append(value)
    summed = [np.asarray(s) for s in summed]
    per_choice_len = [[] for _ in examples]
    for owner, length in zip(owners, lengths):
        per_choice_len[owner].append(length)
    normalised = [s / np.asarray(n) for s, n in zip(summed, per_choice_len)]
    return summed, normalised
