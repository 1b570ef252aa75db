"""Text sources -> documents: local files and globs, `tfds:` datasets, a built-in corpus.

Every source yields plain-text documents through the same path, so GPT packing and BERT
pair building never care where text came from.
"""

from __future__ import annotations

import ast
import os
import re
import sysconfig
from collections.abc import Sequence

from lmscale import storage
from lmscale.data.tokenizer import expand_inputs
from lmscale.errors import InputError

BUILTIN_STDLIB = "builtin:stdlib-docstrings"
_BLANK_LINES = re.compile(r"\n\s*\n")
_SKIPPED_STDLIB_DIRS = ("test", "tests", "idlelib", "site-packages", "__pycache__")


def read_text_file(path: str) -> str:
    """A local or remote (gs://) UTF-8 file's text."""
    return storage.read_text(path)


def split_blank_lines(text: str) -> list[str]:
    return [doc.strip() for doc in _BLANK_LINES.split(text) if doc.strip()]


def file_documents(pattern: str, split: str = "auto") -> list[str]:
    """Documents from the files a pattern matches.

    split="file": each file is one document; "blank_line": blank lines separate documents;
    "auto": one matching file is split at blank lines, several files are one document each.
    """
    files = expand_inputs([pattern])
    if split == "auto":
        split = "blank_line" if len(files) == 1 else "file"
    if split not in ("file", "blank_line"):
        raise InputError(f"data.document_split {split!r} must be auto, file or blank_line")
    documents = []
    for path in files:
        text = read_text_file(path)
        if not text.strip():
            raise InputError(f"input file {path!r} is empty")
        documents.extend(split_blank_lines(text) if split == "blank_line" else [text.strip()])
    return documents


def stdlib_docstrings() -> list[str]:
    """The docstrings of the installed Python standard library: real English prose, present
    on every Python installation, so the default run needs no download. One module's
    docstrings form one document."""
    root = sysconfig.get_paths()["stdlib"]
    documents = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_STDLIB_DIRS)
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            try:
                with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                    tree = ast.parse(f.read())
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            docs = [ast.get_docstring(node) for node in ast.walk(tree)
                    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                         ast.AsyncFunctionDef))]
            text = "\n\n".join(d.strip() for d in docs if d and d.strip())
            if text:
                documents.append(text)
    return documents


def tfds_documents(spec: str, data_dir: str | None = None) -> list[str]:
    """`tfds:NAME[/CONFIG][:SPLIT[:FEATURE]]` read with `tfds.data_source` (array_record,
    no TensorFlow). The dataset must already be prepared in `data_dir`: nothing is
    downloaded."""
    import tensorflow_datasets as tfds

    parts = spec[len("tfds:"):].split(":")
    name, split = parts[0], parts[1] if len(parts) > 1 else "train"
    feature = parts[2] if len(parts) > 2 else "text"
    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as err:  # tfds raises several unrelated types for "not prepared"
        raise InputError(
            f"cannot open {spec!r}: {err}. Prepare it first (tfds build / `lmscale data "
            "prepare`) or point data.tfds_data_dir at the prepared copy"
        ) from err
    documents = []
    for i in range(len(source)):
        value = source[i][feature]
        text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        if text.strip():
            documents.append(text.strip())
    return documents


def read_documents(sources: Sequence[str], split: str = "auto",
                   tfds_data_dir: str | None = None) -> list[str]:
    if isinstance(sources, str):
        sources = [sources]
    if not sources:
        raise InputError("data.sources is empty: give text files, globs, tfds:NAME or "
                         f"{BUILTIN_STDLIB}")
    documents: list[str] = []
    for source in sources:
        if source == BUILTIN_STDLIB:
            documents.extend(stdlib_docstrings())
        elif source.startswith("tfds:"):
            documents.extend(tfds_documents(source, tfds_data_dir))
        else:
            documents.extend(file_documents(source, split))
    if not documents:
        raise InputError(f"the sources {list(sources)} hold no text")
    return documents


def split_held_out(documents: list[str], eval_fraction: float) -> tuple[list[str], list[str]]:
    """Every n-th document (n = 1 / eval_fraction) is held out, so both splits span the
    corpus; at least one document goes to each side."""
    if len(documents) < 2:
        raise InputError(f"need at least 2 documents to hold some out, found {len(documents)}")
    every = max(2, round(1 / eval_fraction)) if eval_fraction > 0 else len(documents) + 1
    held = [d for i, d in enumerate(documents) if i % every == every - 1] or [documents[-1]]
    train = [d for i, d in enumerate(documents) if i % every != every - 1]
    if held == [documents[-1]] and train[-1] is documents[-1]:
        train = train[:-1]
    return train, held

