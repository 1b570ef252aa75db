"""A corpus of several files for the preparation tests, so there are shards to spread
over workers (imported by the tests beside it; not a conftest.py, which would shadow the
top-level one that other tests here import from)."""

import pathlib


def write_shard_corpus(folder: pathlib.Path) -> str:
    """The glob of four files of standard-library docstrings (12 modules each, blank lines
    between documents): with a small data.shard_mb, each file is a shard."""
    from lmscale.data.corpus import stdlib_docstrings

    docs = stdlib_docstrings()[:48]
    for i in range(4):
        (folder / f"part{i}.txt").write_text("\n\n".join(docs[12 * i:12 * (i + 1)]),
                                             encoding="utf-8")
    return str(folder / "*.txt")
