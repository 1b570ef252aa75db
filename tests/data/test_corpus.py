"""Text sources become documents the same way wherever they come from."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from lmscale.data.corpus import (
    BUILTIN_STDLIB, file_documents, read_documents, split_held_out, stdlib_docstrings,
)
from lmscale.data.loader import ArrayExamples, StepBatches
from lmscale.errors import InputError


def test_single_file_splits_at_blank_lines_and_many_files_are_one_document_each(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("first doc\nline two\n\n\nsecond doc\n  \nthird\n", encoding="utf-8")
    b = tmp_path / "b.txt"
    b.write_text("other file\n\nstill the same document\n", encoding="utf-8")
    assert file_documents(str(a)) == ["first doc\nline two", "second doc", "third"]
    assert file_documents(str(tmp_path / "*.txt")) == [
        "first doc\nline two\n\n\nsecond doc\n  \nthird", "other file\n\nstill the same document"]
    assert len(file_documents(str(tmp_path / "*.txt"), split="blank_line")) == 5


def test_bad_files_name_the_file(tmp_path):
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(InputError, match="latin1.txt.*not valid UTF-8"):
        read_documents([str(latin1)])
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    with pytest.raises(InputError, match="empty.txt.*empty"):
        read_documents([str(empty)])
    with pytest.raises(InputError, match="no file matches"):
        read_documents([str(tmp_path / "missing*.txt")])
    with pytest.raises(InputError, match="data.sources is empty"):
        read_documents([])


def test_builtin_corpus_is_real_text_of_at_least_a_megabyte():
    docs = read_documents([BUILTIN_STDLIB])
    assert docs == stdlib_docstrings()
    assert sum(len(d) for d in docs) > 1_000_000
    assert len(docs) > 100
    assert any("Return" in d for d in docs)


def test_held_out_split_is_disjoint_and_spans_the_corpus():
    docs = [f"doc {i}" for i in range(100)]
    train, held = split_held_out(docs, 0.1)
    assert len(held) == 10 and len(train) == 90
    assert not set(train) & set(held)
    assert held[0] == "doc 9" and held[-1] == "doc 99"


def test_step_batches_are_reproducible_sharded_and_reshuffled_each_epoch():
    examples = ArrayExamples({"x": np.arange(12)})
    batches = StepBatches(examples, global_batch_size=4, seed=3)
    again = StepBatches(examples, global_batch_size=4, seed=3)
    assert all((batches[s]["x"] == again[s]["x"]).all() for s in range(9))
    epoch0 = np.concatenate([batches[s]["x"] for s in range(3)])
    epoch1 = np.concatenate([batches[s]["x"] for s in range(3, 6)])
    assert sorted(epoch0) == list(range(12)) and sorted(epoch1) == list(range(12))
    assert not (epoch0 == epoch1).all()
    # Two processes each read half of every global batch, together exactly that batch.
    halves = [StepBatches(examples, 4, seed=3, rows=np.arange(2 * p, 2 * p + 2))
              for p in (0, 1)]
    for s in range(6):
        both = np.concatenate([halves[0][s]["x"], halves[1][s]["x"]])
        assert sorted(both) == sorted(batches[s]["x"])


class TinyTextCorpus(tfds.core.GeneratorBasedBuilder):
    """A catalog-style TFDS text dataset, prepared locally (nothing is downloaded)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, features=tfds.features.FeaturesDict({"text": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(["First document. Two sentences.", "Second."])}

    def _generate_examples(self, docs):
        for i, doc in enumerate(docs):
            yield i, {"text": doc}


def test_tfds_sources_read_prepared_datasets_without_downloading(tmp_path):
    TinyTextCorpus(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    assert read_documents(["tfds:tiny_text_corpus:train"], tfds_data_dir=str(tmp_path)) == [
        "First document. Two sentences.", "Second."]
    with pytest.raises(InputError, match="cannot open 'tfds:tiny_text_corpus:test'"):
        read_documents(["tfds:tiny_text_corpus:test"], tfds_data_dir=str(tmp_path))
