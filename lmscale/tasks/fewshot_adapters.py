"""Built-in few-shot tasks: existing datasets turned into few-shot `Example`s.

- `sst2`: SST-2 sentiment (`sentence<TAB>label` TSV with a header) as two-way multiple
  choice: context "Review: {sentence}\\nSentiment:", choices " negative" / " positive".
- `cloze`: LAMBADA-style last-word prediction from any text file: each paragraph (blank-
  line separated) of at least `min_words` words becomes context = the paragraph without
  its last word, answer = that word without trailing punctuation (generation task).
"""

from __future__ import annotations

import csv
import re

from lmscale import storage
from lmscale.errors import InputError
from lmscale.tasks.fewshot import Example

SST2_CHOICES = (" negative", " positive")
SST2_INSTRUCTION = "Classify the sentiment of each movie review as positive or negative."
CLOZE_INSTRUCTION = "Complete each passage with its final word."
# Generated text is cut at the first of these after leading whitespace (one word).
CLOZE_STOPS = (" ", "\n", ".", ",", ";", ":", "!", "?", "'", '"')


def sst2_examples(path: str, limit: int = 0) -> list[Example]:
    try:
        with storage.open_text(path) as f:
            rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    except FileNotFoundError:
        raise InputError(f"SST-2 file {path!r} does not exist") from None
    if not rows or not {"sentence", "label"} <= set(rows[0]):
        raise InputError(f"{path!r} must be a TSV with a header naming 'sentence' and 'label'")
    examples = [Example(f"Review: {r['sentence'].strip()}\nSentiment:", SST2_CHOICES,
                        int(r["label"])) for r in rows]
    return examples[:limit] if limit else examples


def cloze_examples(path: str, limit: int = 0, min_words: int = 20) -> list[Example]:
    try:
        with storage.open_text(path) as f:
            paragraphs = re.split(r"\n\s*\n", f.read())
    except FileNotFoundError:
        raise InputError(f"cloze text file {path!r} does not exist") from None
    examples = []
    for paragraph in paragraphs:
        words = paragraph.split()
        if len(words) < min_words:
            continue
        answer = words[-1].strip(".,;:!?'\"()[]-")
        if not answer:
            continue
        context = paragraph.rstrip()[: paragraph.rstrip().rfind(words[-1])].rstrip()
        examples.append(Example(context, answers=(answer,)))
        if limit and len(examples) == limit:
            break
    if not examples:
        raise InputError(f"{path!r} has no paragraph of at least {min_words} words")
    return examples
