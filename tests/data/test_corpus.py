"""Text sources become documents the same way wherever they come from."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from lmscale.data.corpus import (
    BUILTIN_STDLIB, BadSourceShard, file_documents, held_out_mask, iter_documents,
    plan_shards, read_documents, shard_documents, split_held_out, stdlib_docstrings,
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


class ManyTextCorpus(tfds.core.GeneratorBasedBuilder):
    """60 records of ~100 bytes; records 20-39 hold no text."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, features=tfds.features.FeaturesDict({"text": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(60):
            yield i, {"text": "" if 20 <= i < 40 else f"record {i:02d} " + "x" * 90}
        # (TFDS stores records in an order hashed from their keys.)


def test_tfds_splits_are_read_in_record_ranges_of_about_shard_mb(tmp_path):
    ManyTextCorpus(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    spec = "tfds:many_text_corpus:train"
    shards = plan_shards([spec], tfds_data_dir=str(tmp_path), shard_mb=0.001)
    # ~1,000 bytes of a split of 60 records of ~100 (+ serialization) bytes each.
    per_shard = shards[0].records[1]
    assert 8 <= per_shard <= 16 and len(shards) == -(-60 // per_shard)
    assert [s.records for s in shards][-1][1] == 60
    assert [s.index for s in shards] == list(range(len(shards)))
    texts = [r["text"].decode() for r in tfds.data_source("many_text_corpus", split="train",
                                                          data_dir=str(tmp_path))]
    assert list(iter_documents(shards)) == [t for t in texts if t]  # in record order
    # A range whose records all lack text is an empty source shard, named by its range.
    single = plan_shards([spec], tfds_data_dir=str(tmp_path), shard_mb=1e-5)
    assert [s.records for s in single] == [(i, i + 1) for i in range(60)]
    skipped = []
    assert len(list(iter_documents(single, skipped.append))) == 40
    assert [bad.name for bad in skipped] == [f"{spec}[{i}:{i + 1}]"
                                             for i, t in enumerate(texts) if not t]
    assert {bad.reason for bad in skipped} == {"is empty (no record holds text)"}
    with pytest.raises(BadSourceShard, match=r"many_text_corpus:train\[\d+:\d+\]' is empty"):
        shard_documents(single[texts.index("")])


def test_files_are_grouped_into_shards_of_about_shard_mb(tmp_path):
    for i, size in enumerate([300, 300, 500, 2000, 100]):
        (tmp_path / f"f{i}.txt").write_text(f"file {i} " + "w" * size, encoding="utf-8")
    shards = plan_shards([str(tmp_path / "*.txt")], shard_mb=0.001)
    # Files are added until a shard holds >= 1,000 bytes; the 2 kB file closes its own.
    assert [[p[-6:] for p in s.files] for s in shards] == [
        ["f0.txt", "f1.txt", "f2.txt"], ["f3.txt"], ["f4.txt"]]
    assert {s.document_split for s in shards} == {"file"}  # "auto" with several files
    assert len(plan_shards([str(tmp_path / "*.txt")], shard_mb=16)) == 1
    assert [len(shard_documents(s)) for s in shards] == [3, 1, 1]


def test_truncated_misencoded_and_empty_source_shards_are_named(tmp_path):
    good = tmp_path / "a_good.txt"
    good.write_text("one doc\n\nanother doc", encoding="utf-8")
    cut = tmp_path / "b_cut.txt"
    cut.write_bytes("caf\u00e9 au lait".encode("utf-8")[:4])  # ends inside the 2-byte \u00e9
    latin1 = tmp_path / "c_latin1.txt"
    latin1.write_bytes("caf\xe9 au lait".encode("latin-1"))
    empty = tmp_path / "d_empty.txt"
    empty.write_text(" \n\n ", encoding="utf-8")
    [shard] = plan_shards([str(tmp_path / "*.txt")], document_split="blank_line")
    with pytest.raises(BadSourceShard, match="b_cut.txt' is truncated inside a UTF-8 "
                                             "sequence at byte 3 of 4.*skip_bad_shards"):
        shard_documents(shard)
    skipped = []
    assert shard_documents(shard, skipped.append) == ["one doc", "another doc"]
    assert [(os.path.basename(b.name), b.reason.split(" (")[0]) for b in skipped] == [
        ("b_cut.txt", "is truncated inside a UTF-8 sequence at byte 3 of 4"),
        ("c_latin1.txt", "is not valid UTF-8"), ("d_empty.txt", "is empty")]


def test_held_out_documents_are_every_nth_of_each_shard():
    assert held_out_mask(10, 0.25, first_shard=False) == [
        i % 4 == 3 for i in range(10)]
    # Too few documents for the fraction: the first shard still holds one out, others don't.
    assert held_out_mask(3, 0.1, first_shard=True) == [False, False, True]
    assert held_out_mask(3, 0.1, first_shard=False) == [False, False, False]
    assert held_out_mask(1, 0.1, first_shard=True) == [False]
