"""Text sources -> shards -> documents: local or gs:// files and globs, `tfds:` datasets, a
built-in corpus.

Preparation works shard by shard, so memory and parallelism follow the shard, not the
corpus. A `Shard` is a fixed, planned slice of the sources:

- file sources: consecutive files of one pattern (in sorted order) until they hold
  `shard_mb` MB (a larger file is a shard alone);
- `tfds:` sources: a range of records of about `shard_mb` MB (from the split's recorded
  size), read by index with `tfds.data_source`, so a split is streamed, never listed whole;
- the built-in corpus: one shard.

The plan needs only file sizes and record counts, so it is cheap, and the same for every
runner. Each file or tfds record range inside a shard is a *source shard*: the unit a bad
input is reported by (truncated inside a UTF-8 sequence, not UTF-8, or empty) and, when
the config allows it, skipped. Every source shard is decoded whole before any of its
documents is used, so a skipped one contributes nothing.
"""

from __future__ import annotations

import ast
import functools
import math
import os
import re
import sysconfig
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from lmscale import storage
from lmscale.data.tokenizer import expand_inputs
from lmscale.errors import InputError

BUILTIN_STDLIB = "builtin:stdlib-docstrings"
_BLANK_LINES = re.compile(r"\n\s*\n")
_SKIPPED_STDLIB_DIRS = ("test", "tests", "idlelib", "site-packages", "__pycache__")
# Records per tfds shard when the split does not record its size.
_TFDS_RECORDS_PER_SHARD = 10_000


class BadSourceShard(InputError):
    """A source shard (a file or a tfds record range) that cannot be used as text."""

    def __init__(self, name: str, reason: str):
        self.name, self.reason = name, reason
        super().__init__(f"{name!r} {reason}; fix or remove it, or set "
                         "--config.data.skip_bad_shards=True to skip such inputs (each "
                         "skip is counted and reported)")


@dataclass(frozen=True)
class Shard:
    """One unit of preparation: `files` of one source, a tfds record range, or the
    built-in corpus. `index` (its position in the plan) seeds its examples and keys them."""

    index: int
    source: str
    files: tuple[str, ...] = ()
    document_split: str = "blank_line"  # files: "file" or "blank_line"
    records: tuple[int, int] = (0, 0)  # tfds: [start, stop)
    tfds_data_dir: str | None = None

    @property
    def names(self) -> list[str]:
        """The source shards it holds, by the names reports use."""
        if self.source.startswith("tfds:"):
            return [f"{self.source}[{self.records[0]}:{self.records[1]}]"]
        return list(self.files) or [self.source]


def split_blank_lines(text: str) -> list[str]:
    return [doc.strip() for doc in _BLANK_LINES.split(text) if doc.strip()]


def _file_split(files: Sequence[str], split: str) -> str:
    if split == "auto":
        return "blank_line" if len(files) == 1 else "file"
    if split not in ("file", "blank_line"):
        raise InputError(f"data.document_split {split!r} must be auto, file or blank_line")
    return split


def plan_shards(sources: Sequence[str], document_split: str = "auto",
                tfds_data_dir: str | None = None, shard_mb: float = 16.0) -> list[Shard]:
    """The shards of `sources`, in order. Files are listed and sized, tfds splits opened
    for their length; no text is read."""
    if isinstance(sources, str):
        sources = [sources]
    if not sources:
        raise InputError("data.sources is empty: give text files, globs, tfds:NAME or "
                         f"{BUILTIN_STDLIB}")
    if shard_mb <= 0:
        raise InputError(f"data.shard_mb is {shard_mb}; it must be positive")
    target = shard_mb * 1e6
    shards: list[Shard] = []

    def add(**fields) -> None:
        shards.append(Shard(index=len(shards), **fields))

    for source in sources:
        if source == BUILTIN_STDLIB:
            add(source=source)
        elif source.startswith("tfds:"):
            length, per_shard = _tfds_plan(source, tfds_data_dir, target)
            for start in range(0, length, per_shard):
                add(source=source, records=(start, min(length, start + per_shard)),
                    tfds_data_dir=tfds_data_dir)
        else:
            files = expand_inputs([source])
            split = _file_split(files, document_split)
            group: list[str] = []
            size = 0
            for path in files:
                group.append(path)
                size += storage.size(path)
                if size >= target:
                    add(source=source, files=tuple(group), document_split=split)
                    group, size = [], 0
            if group:
                add(source=source, files=tuple(group), document_split=split)
    return shards


def _tfds_spec(spec: str) -> tuple[str, str, str]:
    """`tfds:NAME[/CONFIG][:SPLIT[:FEATURE]]` -> (name, split, feature)."""
    parts = spec[len("tfds:"):].split(":")
    return parts[0], parts[1] if len(parts) > 1 else "train", parts[2] if len(parts) > 2 else "text"


@functools.cache
def _tfds_source(spec: str, data_dir: str | None):
    """`tfds.data_source` of a prepared split (array_record, no TensorFlow); nothing is
    downloaded. Cached per process: a Beam worker opens each split once."""
    import tensorflow_datasets as tfds

    name, split, _ = _tfds_spec(spec)
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as err:  # tfds raises several unrelated types for "not prepared"
        raise InputError(
            f"cannot open {spec!r}: {err}. Prepare it first (tfds build / `lmscale data "
            "prepare`) or point data.tfds_data_dir at the prepared copy"
        ) from err


def _tfds_plan(spec: str, data_dir: str | None, target_bytes: float) -> tuple[int, int]:
    """(records in the split, records per shard): about `target_bytes` of the split's
    recorded size per shard."""
    source = _tfds_source(spec, data_dir)
    length = len(source)
    _, split, _ = _tfds_spec(spec)
    try:
        num_bytes = source.dataset_info.splits[split].num_bytes
    except (AttributeError, KeyError):
        num_bytes = 0
    if not num_bytes or not length:
        return length, _TFDS_RECORDS_PER_SHARD
    return length, max(1, math.floor(target_bytes * length / num_bytes))


def decode_utf8(data: bytes, name: str) -> str:
    """`data` as text, or the reason it is not: truncated inside a UTF-8 sequence (a cut
    file), invalid UTF-8 (another encoding), or empty."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.reason == "unexpected end of data" and err.end == len(data):
            raise BadSourceShard(name, f"is truncated inside a UTF-8 sequence at byte "
                                       f"{err.start} of {len(data)}") from err
        raise BadSourceShard(name, f"is not valid UTF-8 (byte {err.start}): convert it, e.g. "
                                   f"'iconv -f latin1 -t utf-8 {name}'") from err
    if not text.strip():
        raise BadSourceShard(name, "is empty")
    return text


def _file_documents(path: str, split: str) -> list[str]:
    text = decode_utf8(storage.read_bytes(path), path)
    return split_blank_lines(text) if split == "blank_line" else [text.strip()]


def _tfds_documents(shard: Shard) -> list[str]:
    name = shard.names[0]
    _, _, feature = _tfds_spec(shard.source)
    source = _tfds_source(shard.source, shard.tfds_data_dir)
    documents = []
    for start in range(shard.records[0], shard.records[1], 1000):
        indices = list(range(start, min(shard.records[1], start + 1000)))
        for i, record in zip(indices, source.__getitems__(indices)):
            value = record[feature]
            if isinstance(value, bytes):
                try:
                    value = value.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise BadSourceShard(name, f"has a record ({i}) that is not valid UTF-8 "
                                               f"(byte {err.start})") from err
            text = str(value).strip()
            if text:  # empty records (e.g. a blank wikipedia page) are not documents
                documents.append(text)
    if not documents:
        raise BadSourceShard(name, "is empty (no record holds text)")
    return documents


def shard_documents(shard: Shard,
                    on_bad: Callable[[BadSourceShard], None] | None = None) -> list[str]:
    """The documents of a shard, in order. A bad source shard raises `BadSourceShard`, or,
    with `on_bad`, is passed to it and contributes nothing."""
    if shard.source == BUILTIN_STDLIB:
        return stdlib_docstrings()
    parts: list[tuple[str, Callable[[], list[str]]]]
    if shard.source.startswith("tfds:"):
        parts = [(shard.names[0], lambda: _tfds_documents(shard))]
    else:
        parts = [(path, functools.partial(_file_documents, path, shard.document_split))
                 for path in shard.files]
    documents: list[str] = []
    for _, read in parts:
        try:
            documents.extend(read())
        except BadSourceShard as bad:
            if on_bad is None:
                raise
            on_bad(bad)
    return documents


def iter_documents(shards: Sequence[Shard],
                   on_bad: Callable[[BadSourceShard], None] | None = None) -> Iterator[str]:
    """Every document of `shards`, one shard in memory at a time."""
    for shard in shards:
        yield from shard_documents(shard, on_bad)


def read_documents(sources: Sequence[str], split: str = "auto",
                   tfds_data_dir: str | None = None) -> list[str]:
    """Every document of `sources` in one list: for small corpora and tests; preparation
    works per shard instead."""
    documents = list(iter_documents(plan_shards(sources, split, tfds_data_dir)))
    if not documents:
        raise InputError(f"the sources {list(sources)} hold no text")
    return documents


def file_documents(pattern: str, split: str = "auto") -> list[str]:
    """Documents from the files a pattern matches.

    split="file": each file is one document; "blank_line": blank lines separate documents;
    "auto": one matching file is split at blank lines, several files are one document each.
    """
    return read_documents([pattern], split)


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


def held_out_mask(num_documents: int, eval_fraction: float, first_shard: bool) -> list[bool]:
    """Which of a shard's documents are held out: every n-th (n = 1 / eval_fraction), so
    both splits span every shard. In the first shard, the last document is held out when
    no other is, so a corpus always has a held-out document."""
    every = max(2, round(1 / eval_fraction)) if eval_fraction > 0 else num_documents + 1
    mask = [i % every == every - 1 for i in range(num_documents)]
    if first_shard and num_documents >= 2 and not any(mask):
        mask[-1] = True
    return mask


def split_held_out(documents: list[str], eval_fraction: float) -> tuple[list[str], list[str]]:
    """(training, held-out) documents of one shard's list, by `held_out_mask`."""
    if len(documents) < 2:
        raise InputError(f"need at least 2 documents to hold some out, found {len(documents)}")
    mask = held_out_mask(len(documents), eval_fraction, first_shard=True)
    return ([d for d, held in zip(documents, mask) if not held],
            [d for d, held in zip(documents, mask) if held])
